#!/usr/bin/env python3
"""Validates GeoJSON files against the rules of RFC 7946, with the Python standard library only.

    validate_geojson.py FILE...      exit 0 when every file is valid, 1 when one is not, 2 on usage
    validate_geojson.py --self-test  checks the checker on built-in good and bad documents

What is checked (RFC 7946 section in brackets):
  - the text is JSON (RFC 8259) with no duplicate member names and no NaN/Infinity [2];
  - every GeoJSON object has a string "type" of a known kind [3];
  - FeatureCollection: "features" is an array of Feature objects [3.3];
  - Feature: "geometry" is a Geometry object or null, "properties" an object or null, "id" (if
    any) a string or number [3.2];
  - geometries: "coordinates" of the right depth; GeometryCollection "geometries" [3.1];
  - positions: 2 or 3 numbers, [longitude, latitude(, altitude)], longitude within -180..180,
    latitude within -90..90 [3.1.1, 4];
  - LineString: at least 2 positions [3.1.4]; linear rings: closed, at least 4 positions
    [3.1.6]; Polygon exterior ring counterclockwise, holes clockwise (right-hand rule) [3.1.6];
  - "bbox": 2n numbers, n = 2 or 3, south <= north, within range [5];
  - no member "crs" (removed in RFC 7946, Appendix B) and no members that define another type
    (e.g. "coordinates" in a Feature) [7.1].
Foreign members (any other names) are allowed and not looked into [6.1].
"""

import json
import math
import sys

GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                  "GeometryCollection"}
ALL_TYPES = GEOMETRY_TYPES | {"Feature", "FeatureCollection"}
# Members that define a type and so must not appear in objects of another type (RFC 7946 7.1).
FORBIDDEN = {
    "FeatureCollection": {"coordinates", "geometries", "geometry", "properties"},
    "Feature": {"coordinates", "geometries", "features"},
    "geometry": {"geometry", "properties", "features"},
}


class Checker:
    def __init__(self):
        self.errors = []

    def error(self, path, message):
        self.errors.append(f"{path or '$'}: {message}")

    # ---- helpers ----

    @staticmethod
    def is_number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def check_common(self, obj, path, kind):
        if "crs" in obj:
            self.error(path, 'member "crs" is not part of RFC 7946 (coordinates are WGS 84 longitude, latitude)')
        for name in sorted(FORBIDDEN.get(kind, set())):
            if name in obj:
                self.error(path, f'a {obj.get("type")} must not have a "{name}" member (RFC 7946 7.1)')
        if "bbox" in obj:
            self.check_bbox(obj["bbox"], f"{path}.bbox")

    def check_bbox(self, bbox, path):
        if not isinstance(bbox, list) or len(bbox) not in (4, 6) or not all(self.is_number(v) for v in bbox):
            self.error(path, "must be an array of 4 or 6 numbers")
            return
        half = len(bbox) // 2
        west, south, east, north = bbox[0], bbox[1], bbox[half], bbox[half + 1]
        for lon in (west, east):
            if not -180 <= lon <= 180:
                self.error(path, f"longitude {lon} out of range -180..180")
        for lat in (south, north):
            if not -90 <= lat <= 90:
                self.error(path, f"latitude {lat} out of range -90..90")
        if south > north:
            self.error(path, f"south {south} is greater than north {north}")

    def check_position(self, pos, path):
        if not isinstance(pos, list) or len(pos) not in (2, 3):
            self.error(path, f"a position must be an array of 2 or 3 numbers, got {json.dumps(pos)[:60]}")
            return False
        if not all(self.is_number(v) for v in pos):
            self.error(path, f"a position must hold numbers only, got {json.dumps(pos)[:60]}")
            return False
        lon, lat = pos[0], pos[1]
        ok = True
        if not -180 <= lon <= 180:
            self.error(path, f"longitude {lon} out of range -180..180 (positions are [longitude, latitude])")
            ok = False
        if not -90 <= lat <= 90:
            self.error(path, f"latitude {lat} out of range -90..90 (positions are [longitude, latitude])")
            ok = False
        return ok

    def check_positions(self, positions, path, minimum):
        if not isinstance(positions, list):
            self.error(path, "must be an array of positions")
            return False
        ok = all([self.check_position(p, f"{path}[{i}]") for i, p in enumerate(positions)])
        if len(positions) < minimum:
            self.error(path, f"needs at least {minimum} positions, has {len(positions)}")
            ok = False
        return ok

    @staticmethod
    def signed_area(ring):
        # Shoelace formula in the [lon, lat] plane: > 0 counterclockwise, < 0 clockwise.
        total = 0.0
        for (x0, y0, *_), (x1, y1, *_) in zip(ring, ring[1:]):
            total += x0 * y1 - x1 * y0
        return total / 2

    def check_ring(self, ring, path, exterior):
        if not self.check_positions(ring, path, 4):
            return
        if ring[0] != ring[-1]:
            self.error(path, "a linear ring must be closed: its first and last positions must be equal")
            return
        area = self.signed_area(ring)
        if area == 0:
            self.error(path, "the ring encloses no area")
        elif exterior and area < 0:
            self.error(path, "the exterior ring is clockwise; RFC 7946 3.1.6 wants it counterclockwise")
        elif not exterior and area > 0:
            self.error(path, "a hole is counterclockwise; RFC 7946 3.1.6 wants it clockwise")

    def check_polygon(self, rings, path):
        if not isinstance(rings, list) or not rings:
            self.error(path, "a Polygon's coordinates must be a non-empty array of linear rings")
            return
        for i, ring in enumerate(rings):
            self.check_ring(ring, f"{path}[{i}]", exterior=(i == 0))

    # ---- objects ----

    def check_geometry(self, g, path):
        if not isinstance(g, dict):
            self.error(path, "a geometry must be an object")
            return
        kind = g.get("type")
        if kind not in GEOMETRY_TYPES:
            self.error(path, f"unknown geometry type {json.dumps(kind)}")
            return
        self.check_common(g, path, "geometry")
        if kind == "GeometryCollection":
            geometries = g.get("geometries")
            if not isinstance(geometries, list):
                self.error(path, 'a GeometryCollection needs a "geometries" array')
                return
            if "coordinates" in g:
                self.error(path, 'a GeometryCollection must not have "coordinates"')
            for i, sub in enumerate(geometries):
                self.check_geometry(sub, f"{path}.geometries[{i}]")
            return
        if "coordinates" not in g:
            self.error(path, f'a {kind} needs "coordinates"')
            return
        c, cp = g["coordinates"], f"{path}.coordinates"
        if kind == "Point":
            self.check_position(c, cp)
        elif kind == "MultiPoint":
            self.check_positions(c, cp, 0)
        elif kind == "LineString":
            self.check_positions(c, cp, 2)
        elif kind == "MultiLineString":
            if not isinstance(c, list):
                self.error(cp, "must be an array of LineString coordinates")
            else:
                for i, line in enumerate(c):
                    self.check_positions(line, f"{cp}[{i}]", 2)
        elif kind == "Polygon":
            self.check_polygon(c, cp)
        elif kind == "MultiPolygon":
            if not isinstance(c, list):
                self.error(cp, "must be an array of Polygon coordinates")
            else:
                for i, poly in enumerate(c):
                    self.check_polygon(poly, f"{cp}[{i}]")

    def check_feature(self, f, path):
        if not isinstance(f, dict):
            self.error(path, "a Feature must be an object")
            return
        if f.get("type") != "Feature":
            self.error(path, f'expected type "Feature", got {json.dumps(f.get("type"))}')
            return
        self.check_common(f, path, "Feature")
        if "geometry" not in f:
            self.error(path, 'a Feature needs a "geometry" member (null when unlocated)')
        elif f["geometry"] is not None:
            self.check_geometry(f["geometry"], f"{path}.geometry")
        if "properties" not in f:
            self.error(path, 'a Feature needs a "properties" member (an object or null)')
        elif f["properties"] is not None and not isinstance(f["properties"], dict):
            self.error(f"{path}.properties", "must be an object or null")
        if "id" in f and not (isinstance(f["id"], str) or self.is_number(f["id"])):
            self.error(f"{path}.id", "must be a string or a number")

    def check_document(self, doc):
        if not isinstance(doc, dict):
            self.error("", "a GeoJSON text must be an object")
            return
        kind = doc.get("type")
        if kind not in ALL_TYPES:
            self.error("", f"unknown type {json.dumps(kind)}")
        elif kind == "FeatureCollection":
            self.check_common(doc, "", "FeatureCollection")
            features = doc.get("features")
            if not isinstance(features, list):
                self.error("", 'a FeatureCollection needs a "features" array')
                return
            for i, f in enumerate(features):
                self.check_feature(f, f"$.features[{i}]")
        elif kind == "Feature":
            self.check_feature(doc, "")
        else:
            self.check_geometry(doc, "")


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate member name {json.dumps(key)}")
        obj[key] = value
    return obj


def _no_constants(name):
    raise ValueError(f"{name} is not a JSON number")


def validate_text(text):
    """The list of problems of a GeoJSON text (empty when it is valid)."""
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except ValueError as e:
        return [f"not JSON: {e}"]
    checker = Checker()
    checker.check_document(doc)
    return checker.errors


def self_test():
    square_ccw = [[118.0, 24.0], [118.1, 24.0], [118.1, 24.1], [118.0, 24.1], [118.0, 24.0]]
    hole_cw = [[118.02, 24.02], [118.02, 24.08], [118.08, 24.08], [118.08, 24.02], [118.02, 24.02]]

    def fc(coords, **extra):
        feature = {"type": "Feature", "id": "wsk52", "properties": {"n": 1},
                   "geometry": {"type": "Polygon", "coordinates": coords}}
        feature.update(extra)
        return json.dumps({"type": "FeatureCollection", "features": [feature]})

    good = {
        "polygon": fc([square_ccw]),
        "polygon with a hole": fc([square_ccw, hole_cw]),
        "null properties and geometry": json.dumps(
            {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None, "properties": None}]}),
        "foreign member": json.dumps({"type": "FeatureCollection", "features": [], "sanigate": {"crs": "gcj02"}}),
        "bbox": json.dumps({"type": "FeatureCollection", "bbox": [118.0, 24.0, 118.1, 24.1], "features": []}),
        "point": json.dumps({"type": "Point", "coordinates": [118.1, 24.48, 12.5]}),
    }
    # Each invalid document, with a piece of the complaint it must draw.
    bad = {
        "clockwise exterior ring": (fc([list(reversed(square_ccw))]), "exterior ring is clockwise"),
        "counterclockwise hole": (fc([square_ccw, list(reversed(hole_cw))]), "hole is counterclockwise"),
        "open ring": (fc([square_ccw[:-1] + [[118.0, 24.05]]]), "must be closed"),
        "ring of 3 positions": (fc([[[118.0, 24.0], [118.1, 24.0], [118.0, 24.0]]]), "at least 4 positions"),
        "[lat, lon] order": (fc([[[24.0, 118.0], [24.0, 118.1], [24.1, 118.1], [24.1, 118.0], [24.0, 118.0]]]),
                             "latitude 118.0 out of range"),
        "string coordinate": (fc([[["118.0", 24.0], [118.1, 24.0], [118.1, 24.1], [118.0, 24.1], ["118.0", 24.0]]]),
                              "numbers only"),
        "properties not an object": (fc([square_ccw], properties=[1, 2]), "object or null"),
        "no type": (json.dumps({"features": []}), "unknown type"),
        "features not an array": (json.dumps({"type": "FeatureCollection", "features": {}}), '"features" array'),
        "crs member": (json.dumps({"type": "FeatureCollection", "features": [],
                                   "crs": {"type": "name", "properties": {"name": "EPSG:4326"}}}), '"crs"'),
        "coordinates in a Feature": (fc([square_ccw], coordinates=[1, 2]), '"coordinates" member'),
        "NaN": ('{"type": "Point", "coordinates": [NaN, 24.0]}', "not a JSON number"),
        "duplicate member": ('{"type": "Point", "type": "Point", "coordinates": [118.0, 24.0]}', "duplicate"),
        "bbox south > north": (json.dumps({"type": "FeatureCollection", "bbox": [118.0, 24.1, 118.1, 24.0],
                                           "features": []}), "greater than north"),
        "not JSON": ("{", "not JSON"),
    }
    failures = 0
    for name, text in good.items():
        errors = validate_text(text)
        if errors:
            failures += 1
            print(f"self-test FAILED: valid document '{name}' was rejected: {errors}")
    for name, (text, expected) in bad.items():
        errors = validate_text(text)
        if not errors:
            failures += 1
            print(f"self-test FAILED: invalid document '{name}' was accepted")
        elif not any(expected in e for e in errors):
            failures += 1
            print(f"self-test FAILED: invalid document '{name}' was rejected for another reason: {errors}")
    if failures:
        return 1
    print(f"self-test ok: {len(good)} valid documents accepted, {len(bad)} invalid ones rejected")
    return 0


def main(argv):
    if len(argv) == 2 and argv[1] == "--self-test":
        return self_test()
    if len(argv) < 2 or any(a.startswith("-") and a != "-" for a in argv[1:]):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: validate_geojson.py FILE... | --self-test", file=sys.stderr)
        return 2
    status = 0
    for name in argv[1:]:
        try:
            if name == "-":
                text = sys.stdin.read()
            else:
                with open(name, encoding="utf-8") as f:
                    text = f.read()
        except OSError as e:
            print(f"{name}: cannot read: {e}", file=sys.stderr)
            return 2
        errors = validate_text(text)
        if errors:
            status = 1
            for e in errors[:50]:
                print(f"{name}: {e}")
            if len(errors) > 50:
                print(f"{name}: ... and {len(errors) - 50} more")
        else:
            print(f"{name}: valid GeoJSON (RFC 7946)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
