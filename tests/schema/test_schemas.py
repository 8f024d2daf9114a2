#!/usr/bin/python3
"""Self-test of the MQTT model's JSON Schemas and of validate_payloads.py.

Run:  /usr/bin/python3 tests/schema/test_schemas.py [SCHEMA_DIR] [unittest options]
Without SCHEMA_DIR the schemas are taken from ../../config/schema relative to
this file. Needs only the standard library and python3-jsonschema (4.10).
"""

import copy
import json
import os
import subprocess
import sys
import tempfile
import unittest
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, HERE)

import validate_payloads as vp  # noqa: E402  (needs the path above)

SCHEMA_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "config", "schema"))
VALIDATOR_SCRIPT = os.path.join(HERE, "validate_payloads.py")
ID_BASE = "https://sanigate.example/schema/v1/"
META = "https://json-schema.org/draft/2020-12/schema"

EXPECTED_FILES = [
    "cmd-response.schema.json",
    "common.schema.json",
    "device-status.schema.json",
    "event.schema.json",
    "firmware-job.schema.json",
    "fleet-health.schema.json",
    "fleet-rollout.schema.json",
    "gateway-status.schema.json",
    "heatmap.schema.json",
    "telemetry.schema.json",
]

# The two examples of CONTRACT.md section 3, verbatim.
CONTRACT_READING = json.loads("""
{"id":"gw-houpu-01:184467","ts":1763712000123,"device":"room-07","kind":"garbage_room",
 "source":{"protocol":"modbus","gateway":"gw-houpu-01"},
 "metrics":{"fill_level_pct":81.5,"temperature_c":26.1,"nh3_ppm":3.2,"door_open":false},
 "location":{"lat":24.5123,"lon":118.1342}}
""")
CONTRACT_EVENT = json.loads("""
{"id":"gw-houpu-01:184470","ts":1763712001000,"device":"bin-0412","kind":"bin",
 "event":"overflow","state":"active","severity":"warning","metrics":{"fill_level_pct":96}}
""")

GATEWAY_ONLINE = {
    "online": True, "gateway": "gw-houpu-01", "site": "houpu",
    "version": "0.1.0", "started": 1763711000000, "ts": 1763712000000,
    "adapters": {
        "modbus": {"state": "running", "devices": 12, "errors": 0},
        "lorawan": {"state": "degraded", "devices": 40, "errors": 3,
                    "frames_dropped": 3},
        "jt808": {"state": "starting", "devices": 0, "errors": 0},
    },
    "outbox": {"pending": 5, "oldest_ts": 1763711999000,
               "shed": {"low": 2}, "bytes": 40960},
}

DEVICE_STATUS = {"online": True, "last_seen": 1763712000000, "ts": 1763712000500}

# The heat map (fleet/README.md "The heat map"): the feed of sanigate/v1/{site}/heatmap/{layer},
# a closed window of .../heatmap/{layer}/closed and the admin verb heatmap's result. 2025-11-21
# 16:05:05 in UTC+8, so the current windows start at 16:00, 16:00 and local midnight.
HM_FIELDS = ["n", "sum", "min", "max", "first", "last"]
HM_MERGE = ["add", "add", "min", "max", "min", "max"]
HEATMAP_FEED = {
    "v": 1, "site": "houpu", "layer": "bin_fill", "ts": 1763712305000, "grid": "geohash",
    "precision": 7, "crs": "wgs84", "fields": HM_FIELDS, "merge": HM_MERGE,
    "state": {"cells": {"wsk52gh": [3, 212.5, 41.0, 96.5, 1763711000000, 1763712000000],
                        "ws7gr2m": [1, 81.5, 81.5, 81.5, 1763712000123, 1763712000123]}},
    "windows": [
        {"size_s": 900, "start": 1763712000000, "end": 1763712900000,
         "cells": {"ws7gr2m": [1, 81.5, 81.5, 81.5, 1763712000123, 1763712000123]}},
        {"size_s": 3600, "start": 1763712000000, "end": 1763715600000,
         "cells": {"ws7gr2m": [1, 81.5, 81.5, 81.5, 1763712000123, 1763712000123]}},
        {"size_s": 86400, "start": 1763654400000, "end": 1763740800000,
         "cells": {"ws7gr2m": [4, 290.0, 60.0, 81.5, 1763690000000, 1763712000123],
                   "wsk52gh": [3, 212.5, 41.0, 96.5, 1763711000000, 1763712000000]}},
    ],
}
HEATMAP_CLOSED = {
    "v": 1, "site": "houpu", "layer": "alarms", "ts": 1763712905000, "grid": "geohash",
    "precision": 8, "crs": "gcj02", "fields": HM_FIELDS + ["sos", "fire", "odour"],
    "merge": HM_MERGE + ["add", "add", "add"],
    "window": {"size_s": 900, "start": 1763712000000, "end": 1763712900000},
    "closed": True, "amended": False,
    "cells": {"ws7gpxcq": [2, 2, 1, 1, 1763712300000, 1763712600000, 1, 0, 1]},
}
HEATMAP_ADMIN_STATE = {
    "v": 1, "site": "houpu", "layer": "vehicle_coverage", "ts": 1763712305000,
    "grid": "geohash", "precision": 6, "crs": "wgs84",
    "fields": HM_FIELDS + ["passes", "dwell_s"], "merge": HM_MERGE + ["add", "add"],
    "window": None,
    "cells": {"ws7gr2": [1, 32.5, 32.5, 32.5, 1763712300000, 1763712300000, 1, 0],
              "ws7gr8": [0, 0, None, None, None, None, 0, 0]},
}

# Metric names of DOMAIN.md "Words for the model".
DOMAIN_METRICS = """
fill_level_pct distance_mm temperature_c humidity_pct nh3_ppm h2s_ppm smoke
door_open lid_open uv_lamp_on deodorizer_on fan_on water_level_pct battery_pct
battery_v rssi_dbm snr_db speed_kmh heading_deg altitude_m odometer_km fuel_l
acc_on gnss_fix kitchen_fill_level_pct recyclable_fill_level_pct
hazardous_fill_level_pct other_fill_level_pct
""".split()


def changed(doc, *edits):
    """Deep copy of doc with edits applied: (path tuple, value) sets the value,
    (path tuple,) deletes the key."""
    doc = copy.deepcopy(doc)
    for edit in edits:
        path = edit[0]
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if len(edit) == 1:
            del parent[path[-1]]
        else:
            parent[path[-1]] = edit[1]
    return doc


# A vehicle feed (extras passes, dwell_s) and the unattended layer's (state only).
HEATMAP_VEHICLES = changed(
    HEATMAP_FEED, (("layer",), "vehicle_coverage"),
    (("fields",), HM_FIELDS + ["passes", "dwell_s"]), (("merge",), HM_MERGE + ["add", "add"]),
    (("state",), {"cells": {"ws7gr2m": [1, 32.5, 32.5, 32.5, 1763712300000, 1763712300000, 1, 0]}}),
    (("windows",), [{"size_s": 900, "start": 1763712000000, "end": 1763712900000,
                     "cells": {"ws7gr2m": [3, 60.0, 0, 32.5, 1763712060000, 1763712300000, 1, 240],
                               "ws7gr2q": [1, 18.0, 18.0, 18.0, 1763712030000, 1763712030000, 1, 30]}}]))
HEATMAP_UNATTENDED = changed(
    HEATMAP_FEED, (("layer",), "unattended"),
    (("fields",), HM_FIELDS + ["last_pass"]), (("merge",), HM_MERGE + ["max"]),
    (("state",), {"cells": {"ws7gr2m": [1, 9000, 9000, 9000, 1763703305000, 1763703305000, None]}}),
    (("windows",), []))

# Firmware rollouts (fleet/README.md "Firmware rollouts"), as Campaign::StatusJson and
# FirmwareAgent::Report write them: the campaign of tests/integration/rollout_test.cpp (a canary,
# then waves at 50 % and 100 % of 4 garbage rooms) while the first wave runs, and its jobs.
RO = "fleet-rollout.schema.json"
FJ = "firmware-job.schema.json"
ROLLOUT_RUNNING = {
    "id": "rooms-2-1-0", "state": "running", "reason": "", "target_type": "modbus",
    "model": "GR-200", "version": "2.1.0", "group": 1,
    "groups": [{"group": 0, "name": "canary", "total": 1, "succeeded": 1, "failed": 0},
               {"group": 1, "name": "wave 1", "total": 1, "succeeded": 0, "failed": 0},
               {"group": 2, "name": "wave 2", "total": 2, "succeeded": 0, "failed": 0}],
    "total": 4,
    "counts": {"pending": 2, "deferred": 0, "updating": 1, "verifying": 0, "succeeded": 1,
               "failed": 0},
    "blackout_now": False, "created": 1763712000000, "updated": 1763712061000,
    "ts": 1763712061000,
}
# The canary refused the image: paused by the wave gate, the others untouched.
ROLLOUT_PAUSED = {
    "id": "bad-crc", "state": "paused", "reason": "canary: 0% succeeded, below the 95% threshold",
    "target_type": "modbus", "model": "GR-200", "version": "2.1.0", "group": 0,
    "groups": [{"group": 0, "name": "canary", "total": 1, "succeeded": 0, "failed": 1},
               {"group": 1, "name": "wave 1", "total": 2, "succeeded": 0, "failed": 0}],
    "total": 3,
    "counts": {"pending": 2, "deferred": 0, "updating": 0, "verifying": 0, "succeeded": 0,
               "failed": 1},
    "blackout_now": False, "created": 1763712000000, "updated": 1763712030000,
    "ts": 1763712031000,
}
# The admin result of rollout_status with devices:true (never on the retained topic).
ROLLOUT_PAUSED_DEVICES = changed(ROLLOUT_PAUSED, (("devices",), [
    {"device": "houpu/room-1", "gateway": "gw-test", "group": 1, "state": "pending",
     "attempts": 0, "reason": ""},
    {"device": "houpu/room-2", "gateway": "gw-test", "group": 0, "state": "failed",
     "attempts": 1, "reason": "device refused the checksum"},
    {"device": "houpu/room-3", "gateway": "gw-test", "group": 1, "state": "pending",
     "attempts": 0, "reason": ""}]))
ROLLOUT_COMPLETED = changed(
    ROLLOUT_RUNNING, (("state",), "completed"), (("group",), 3),
    (("groups",), [{"group": 0, "name": "canary", "total": 1, "succeeded": 1, "failed": 0},
                   {"group": 1, "name": "wave 1", "total": 1, "succeeded": 1, "failed": 0},
                   {"group": 2, "name": "wave 2", "total": 2, "succeeded": 1, "failed": 1}]),
    (("counts",), {"pending": 0, "deferred": 0, "updating": 0, "verifying": 0, "succeeded": 3,
                   "failed": 1}))
# Nothing to do: started and completed at once.
ROLLOUT_EMPTY = changed(
    ROLLOUT_RUNNING, (("id",), "rooms-again"), (("state",), "completed"),
    (("reason",), "no device needs this image"), (("group",), 0), (("groups",), []),
    (("total",), 0),
    (("counts",), {"pending": 0, "deferred": 0, "updating": 0, "verifying": 0, "succeeded": 0,
                   "failed": 0}))
# A self-update draft without a canary (its only wave is "wave 1"), one box offline, in the
# morning blackout.
ROLLOUT_DRAFT = {
    "id": "box-2.1.0", "state": "draft", "reason": "", "target_type": "gateway",
    "model": "edge-box", "version": "2.1.0+b7", "group": 0,
    "groups": [{"group": 0, "name": "wave 1", "total": 3, "succeeded": 0, "failed": 0}],
    "total": 3,
    "counts": {"pending": 2, "deferred": 1, "updating": 0, "verifying": 0, "succeeded": 0,
               "failed": 0},
    "blackout_now": True, "created": 1763712000000, "updated": 1763712000000,
    "ts": 1763712000000,
}

# The gateway's job reports for room-1 through its states (image: 30010 bytes).
JOB_DOWNLOADING = {
    "campaign": "rooms-2-1-0", "device": "room-1", "attempt": 1, "state": "downloading",
    "bytes": 16384, "total": 30010, "error": "", "refusal": "", "version": "",
    "ts": 1763712001000,
}
JOB_VERIFYING = changed(JOB_DOWNLOADING, (("state",), "verifying"), (("bytes",), 30010))
JOB_INSTALLING = changed(JOB_DOWNLOADING, (("state",), "installing"), (("bytes",), 0))
JOB_SUCCEEDED = changed(JOB_DOWNLOADING, (("state",), "succeeded"), (("bytes",), 30010),
                        (("version",), "2.1.0"), (("ts",), 1763712020000))
JOB_FAILED_DEVICE = changed(JOB_DOWNLOADING, (("state",), "failed"), (("bytes",), 2880),
                            (("error",), "device refused the checksum"))
JOB_REFUSED = changed(JOB_DOWNLOADING, (("state",), "failed"), (("bytes",), 30010),
                      (("error",), "sha256 mismatch: the image is not the one signed"),
                      (("refusal",), "sha256_mismatch"))
# A self-update rolled back after the restart: the manifest is gone, so total is 0.
JOB_SELF_ROLLED_BACK = {
    "campaign": "box-bad", "device": "gw-test", "attempt": 1, "state": "failed",
    "bytes": 0, "total": 0, "error": "rolled back to 2.0.3: self_check_command failed (exit 1)",
    "refusal": "", "version": "", "ts": 1763712040000,
}
ROLLOUT_EXAMPLES = (ROLLOUT_RUNNING, ROLLOUT_PAUSED, ROLLOUT_COMPLETED, ROLLOUT_EMPTY,
                    ROLLOUT_DRAFT)
JOB_EXAMPLES = (JOB_DOWNLOADING, JOB_VERIFYING, JOB_INSTALLING, JOB_SUCCEEDED,
                JOB_FAILED_DEVICE, JOB_REFUSED, JOB_SELF_ROLLED_BACK)


class SchemaTestBase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.schemas = vp.load_schemas(SCHEMA_DIR)
        cls.validators = vp.make_validators(cls.schemas)

    def errors(self, schema, payload):
        return list(self.validators[schema].iter_errors(payload))

    def assertValid(self, schema, payload):
        errs = self.errors(schema, payload)
        self.assertEqual(errs, [], "%s should accept %s; errors: %s"
                         % (schema, json.dumps(payload),
                            [e.message for e in errs]))

    def assertRejected(self, schema, payload, path, keyword, text=None,
                       via=None):
        """Every error is at `path` and raised by `keyword` (optionally with
        `text` in its message and `via` in its schema path): the payload is
        rejected for the intended reason and no other."""
        errs = self.errors(schema, payload)
        self.assertTrue(errs, "%s should reject %s" % (schema, json.dumps(payload)))
        for e in errs:
            where = "%s: %s (keyword %s, schema path %s)" % (
                vp._json_path(e.absolute_path), e.message, e.validator,
                "/".join(str(p) for p in e.absolute_schema_path))
            self.assertEqual(list(e.absolute_path), list(path), where)
            self.assertEqual(e.validator, keyword, where)
            if text is not None:
                self.assertIn(text, e.message, where)
            if via is not None:
                self.assertIn(via, list(e.absolute_schema_path), where)


class TestSchemaFiles(SchemaTestBase):
    def test_expected_files_present(self):
        self.assertEqual(sorted(self.schemas), EXPECTED_FILES)

    def test_each_file_is_a_draft_2020_12_schema(self):
        for name in EXPECTED_FILES:
            with self.subTest(schema=name):
                with open(os.path.join(SCHEMA_DIR, name), encoding="utf-8") as f:
                    schema = json.load(f)
                self.assertEqual(schema.get("$schema"), META)
                self.assertEqual(schema.get("$id"), ID_BASE + name)
                vp.Draft202012Validator.check_schema(schema)

    def test_every_ref_resolves(self):
        def refs(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "$ref":
                        yield value
                    else:
                        yield from refs(value)
            elif isinstance(node, list):
                for value in node:
                    yield from refs(value)

        for name, schema in self.schemas.items():
            with warnings.catch_warnings():
                # .resolver is deprecated in jsonschema >= 4.18 (fine in 4.10).
                warnings.simplefilter("ignore", DeprecationWarning)
                resolver = self.validators[name].resolver
                for ref in refs(schema):
                    with self.subTest(schema=name, ref=ref):
                        url, target = resolver.resolve(ref)
                        self.assertIsInstance(target, dict, url)

    def test_domain_vocabulary_is_documented(self):
        known = self.schemas["common.schema.json"]["$defs"]["metrics"]["properties"]
        for metric in DOMAIN_METRICS:
            with self.subTest(metric=metric):
                self.assertIn(metric, known)
                self.assertTrue(known[metric].get("description"))


class TestValidPayloads(SchemaTestBase):
    def test_contract_reading(self):
        self.assertValid("telemetry.schema.json", CONTRACT_READING)

    def test_contract_event(self):
        self.assertValid("event.schema.json", CONTRACT_EVENT)

    def test_reading_with_quality_profile_and_radio_source(self):
        reading = changed(
            CONTRACT_READING,
            (("source",), {"protocol": "lorawan", "gateway": "gw-houpu-01",
                           "rssi_dbm": -97, "snr_db": 7.5,
                           "frequency_hz": 470300000, "data_rate": "SF9BW125",
                           "concentrator": "0016c001ff10a235", "backfill": True}),
            (("metrics",), {"fill_level_pct": 130.0, "distance_mm": 120,
                            "battery_pct": 88, "tilt_state": "upright",
                            "lid_open": False}),
            (("quality",), {"fill_level_pct": "out_of_range"}),
            (("profile",), "ultrasonic-bin-v2"),
            (("location",), {"lat": -33.9, "lon": -70.6, "alt_m": 512.0}))
        self.assertValid("telemetry.schema.json", reading)

    def test_vehicle_reading(self):
        reading = {
            "id": "gw-fleet:7", "ts": 0, "device": "truck.a12", "kind": "vehicle",
            "source": {"protocol": "jt808", "gateway": "gw-fleet"},
            "metrics": {"speed_kmh": 32.5, "heading_deg": 270, "acc_on": True,
                        "gnss_fix": True, "odometer_km": 81234.7, "fuel_l": 61},
            "location": {"lat": 39.9, "lon": 116.66},
        }
        self.assertValid("telemetry.schema.json", reading)

    def test_cleared_event_with_everything(self):
        event = changed(CONTRACT_EVENT,
                        (("state",), "cleared"), (("severity",), "info"),
                        (("message",), "fill level back to 60 %"),
                        (("details",), {"threshold_pct": 90, "bits": [1, 2]}),
                        (("source",), {"protocol": "lorawan", "gateway": "gw-houpu-01"}),
                        (("location",), {"lat": 24.5, "lon": 118.1}))
        self.assertValid("event.schema.json", event)

    def test_gateway_status_online(self):
        self.assertValid("gateway-status.schema.json", GATEWAY_ONLINE)
        empty_outbox = changed(GATEWAY_ONLINE, (("outbox",), {"pending": 0, "oldest_ts": None}),
                               (("adapters",), {}))
        self.assertValid("gateway-status.schema.json", empty_outbox)

    def test_gateway_status_offline(self):
        offline = changed(GATEWAY_ONLINE, (("online",), False))
        self.assertValid("gateway-status.schema.json", offline)

    def test_gateway_will(self):
        self.assertValid("gateway-status.schema.json", {"online": False, "ts": 1})
        self.assertValid("gateway-status.schema.json",
                         {"online": False, "gateway": "gw-houpu-01", "ts": 1763712000000})

    def test_device_status(self):
        self.assertValid("device-status.schema.json", DEVICE_STATUS)
        never = {"online": False, "last_seen": None, "ts": 5, "device": "bin-0412",
                 "kind": "bin", "reason": "timeout", "errors": 4,
                 "id": "gw-houpu-01:9",
                 "source": {"protocol": "modbus", "gateway": "gw-houpu-01", "unit_id": 7}}
        self.assertValid("device-status.schema.json", never)

    def test_heatmap_feeds(self):
        for doc in (HEATMAP_FEED, HEATMAP_VEHICLES, HEATMAP_UNATTENDED):
            with self.subTest(layer=doc["layer"]):
                self.assertValid(H, doc)
        # Nothing binned yet; precision 6 and 8; GCJ-02 cells.
        self.assertValid(H, changed(HEATMAP_FEED, (("state", "cells"), {}), (("windows",), [])))
        self.assertValid(H, changed(HEATMAP_FEED, (("precision",), 6), (("crs",), "gcj02"),
                                    (("state", "cells"), {"ws7gr2": [1, 1, 1, 1, 0, 0]}),
                                    (("windows",), [])))
        self.assertValid(H, changed(HEATMAP_FEED, (("precision",), 8),
                                    (("state", "cells"), {"ws7gr2my": [1, 1, 1, 1, 0, 0]}),
                                    (("windows",), [])))
        for layer in ("workers", "overflow"):
            self.assertValid(H, changed(HEATMAP_FEED, (("layer",), layer)))

    def test_heatmap_closed_window(self):
        self.assertValid(H, HEATMAP_CLOSED)
        self.assertValid(H, changed(HEATMAP_CLOSED, (("amended",), True), (("cells",), {})))

    def test_heatmap_admin_result(self):
        self.assertValid(H, HEATMAP_ADMIN_STATE)
        self.assertValid(H, changed(HEATMAP_ADMIN_STATE, (("window",), {
            "size_s": 3600, "start": 1763712000000, "end": 1763715600000})))
        # As it travels: inside the admin API's response.
        self.assertValid("cmd-response.schema.json", {"ok": True, "result": HEATMAP_ADMIN_STATE})

    def test_cmd_response(self):
        self.assertValid("cmd-response.schema.json", {"ok": True})
        self.assertValid("cmd-response.schema.json",
                         {"ok": True, "error": None, "result": {"lid": "open"}})
        self.assertValid("cmd-response.schema.json",
                         {"ok": False, "error": "device offline", "result": None})


class TestInvalidPayloads(SchemaTestBase):
    T = "telemetry.schema.json"
    E = "event.schema.json"

    def test_missing_id(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("id",),)),
                            [], "required", "'id'")
        self.assertRejected(self.E, changed(CONTRACT_EVENT, (("id",),)),
                            [], "required", "'id'")

    def test_bad_id(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("id",), "184467")),
                            ["id"], "pattern")

    def test_ts_float(self):
        # 1.0 would be an integer for JSON Schema; a fraction is not.
        self.assertRejected(self.T, changed(CONTRACT_READING, (("ts",), 1763712000123.5)),
                            ["ts"], "type")

    def test_ts_string(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("ts",), "1763712000123")),
                            ["ts"], "type")

    def test_ts_negative(self):
        self.assertRejected(self.E, changed(CONTRACT_EVENT, (("ts",), -1)),
                            ["ts"], "minimum")

    def test_metric_name_uppercase(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("metrics", "Fill_level_pct"), 5)),
                            ["metrics"], "pattern", "Fill_level_pct", via="propertyNames")

    def test_metric_name_dash(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("metrics", "fill-level_pct"), 5)),
                            ["metrics"], "pattern", "fill-level_pct", via="propertyNames")

    def test_metric_value_object(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("metrics", "fill_level_pct"), {"v": 1})),
                            ["metrics", "fill_level_pct"], "type")
        self.assertRejected(self.T, changed(CONTRACT_READING, (("metrics", "lid_state"), {})),
                            ["metrics", "lid_state"], "type")

    def test_metric_value_array(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("metrics", "bins"), [1, 2])),
                            ["metrics", "bins"], "type")
        self.assertRejected(self.E, changed(CONTRACT_EVENT, (("metrics", "fill_level_pct"), [96])),
                            ["metrics", "fill_level_pct"], "type")

    def test_metric_with_unit_suffix_must_be_number(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("metrics", "pressure_m"), "12")),
                            ["metrics", "pressure_m"], "type")
        self.assertRejected(self.T, changed(CONTRACT_READING, (("metrics", "door_open"), "yes")),
                            ["metrics", "door_open"], "type")

    def test_metrics_empty(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("metrics",), {})),
                            ["metrics"], "minProperties")

    def test_location_lat_91(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("location", "lat"), 91)),
                            ["location", "lat"], "maximum")

    def test_location_extra_field_and_missing_lon(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("location", "speed"), 3)),
                            ["location"], "additionalProperties", "'speed'")
        self.assertRejected(self.T, changed(CONTRACT_READING, (("location", "lon"),)),
                            ["location"], "required", "'lon'")

    def test_unknown_top_level_field(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("colour",), "green")),
                            [], "additionalProperties", "'colour'")
        self.assertRejected(self.E, changed(CONTRACT_EVENT, (("colour",), "green")),
                            [], "additionalProperties", "'colour'")

    def test_source_without_gateway(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("source", "gateway"),)),
                            ["source"], "required", "'gateway'")

    def test_event_state_on(self):
        self.assertRejected(self.E, changed(CONTRACT_EVENT, (("state",), "on")),
                            ["state"], "enum")

    def test_event_severity_fatal(self):
        self.assertRejected(self.E, changed(CONTRACT_EVENT, (("severity",), "fatal")),
                            ["severity"], "enum")

    def test_event_name_bad(self):
        self.assertRejected(self.E, changed(CONTRACT_EVENT, (("event",), "Overflow")),
                            ["event"], "pattern")

    def test_device_id_uppercase(self):
        self.assertRejected(self.T, changed(CONTRACT_READING, (("device",), "Room-07")),
                            ["device"], "pattern")
        self.assertRejected(self.E, changed(CONTRACT_EVENT, (("device",), "BIN-0412")),
                            ["device"], "pattern")

    def test_device_status_without_online(self):
        self.assertRejected("device-status.schema.json", changed(DEVICE_STATUS, (("online",),)),
                            [], "required", "'online'")

    def test_device_status_last_seen_string(self):
        self.assertRejected("device-status.schema.json",
                            changed(DEVICE_STATUS, (("last_seen",), "never")),
                            ["last_seen"], "type")

    def test_gateway_online_needs_full_status(self):
        for field in ("version", "started", "adapters", "outbox"):
            with self.subTest(missing=field):
                self.assertRejected("gateway-status.schema.json",
                                    changed(GATEWAY_ONLINE, ((field,),)),
                                    [], "required", "'%s'" % field)

    def test_gateway_will_without_ts(self):
        self.assertRejected("gateway-status.schema.json", {"online": False},
                            [], "required", "'ts'")

    def test_gateway_adapter_state_and_counts(self):
        self.assertRejected("gateway-status.schema.json",
                            changed(GATEWAY_ONLINE, (("adapters", "modbus", "state"), "ok")),
                            ["adapters", "modbus", "state"], "enum")
        self.assertRejected("gateway-status.schema.json",
                            changed(GATEWAY_ONLINE, (("outbox", "pending"), -1)),
                            ["outbox", "pending"], "minimum")

    def test_cmd_response_without_ok(self):
        self.assertRejected("cmd-response.schema.json", {"error": None},
                            [], "required", "'ok'")


H = "heatmap.schema.json"


class TestInvalidHeatmap(SchemaTestBase):
    def test_header_values(self):
        F = HEATMAP_FEED
        self.assertRejected(H, changed(F, (("v",), 2)), ["v"], "const")
        self.assertRejected(H, changed(F, (("layer",), "bins")), ["layer"], "enum")
        self.assertRejected(H, changed(F, (("grid",), "s2")), ["grid"], "const")
        self.assertRejected(H, changed(F, (("crs",), "bd09")), ["crs"], "enum")
        self.assertRejected(H, changed(F, (("precision",), 9)), ["precision"], "maximum")
        self.assertRejected(H, changed(F, (("precision",), 5)), ["precision"], "minimum")
        self.assertRejected(H, changed(F, (("precision",), 7.5)), ["precision"], "type")
        self.assertRejected(H, changed(F, (("ts",), -1)), ["ts"], "minimum")
        self.assertRejected(H, changed(F, (("site",), "Houpu")), ["site"], "pattern")
        self.assertRejected(H, changed(F, (("colour",), "red")), [], "additionalProperties")

    def test_header_required(self):
        for field in ("v", "site", "layer", "ts", "grid", "precision", "crs", "fields", "merge"):
            with self.subTest(missing=field):
                self.assertRejected(H, changed(HEATMAP_FEED, ((field,),)),
                                    [], "required", "'%s'" % field)

    def test_fields_and_merge(self):
        F = HEATMAP_VEHICLES
        self.assertRejected(H, changed(F, (("fields", 0), "count")), ["fields", 0], "const")
        self.assertRejected(H, changed(F, (("fields",), ["n", "sum", "min", "max", "first"])),
                            ["fields"], "minItems")
        self.assertRejected(H, changed(F, (("fields", 6), "Passes")), ["fields", 6], "pattern")
        self.assertRejected(H, changed(F, (("fields", 7), "passes")), ["fields"], "uniqueItems")
        self.assertRejected(H, changed(F, (("merge", 2), "max")), ["merge", 2], "const")
        self.assertRejected(H, changed(F, (("merge", 6), "sum")), ["merge", 6], "enum")

    def test_cell_keys(self):
        F = HEATMAP_FEED
        for key in ("wsk52ga", "wsk52gi", "wsk52gl", "wsk52go", "WSK52GH", "wsk52g", "wsk52ghxy"):
            with self.subTest(key=key):
                errs = self.errors(H, changed(F, (("state", "cells", key), [1, 1, 1, 1, 0, 0])))
                self.assertTrue(errs)
                for e in errs:
                    self.assertEqual(list(e.absolute_path), ["state", "cells"])
                    self.assertIn("propertyNames", list(e.absolute_schema_path))
        # Valid geohash, wrong length for the precision: only the length is wrong.
        self.assertRejected(H, changed(F, (("state", "cells", "ws7gr2my"), [1, 1, 1, 1, 0, 0])),
                            ["state", "cells"], "maxLength", via="propertyNames")
        self.assertRejected(H, changed(F, (("windows", 0, "cells", "ws7gr2"), [1, 1, 1, 1, 0, 0])),
                            ["windows", 0, "cells"], "minLength", via="propertyNames")
        self.assertRejected(H, changed(HEATMAP_CLOSED, (("cells", "ws7gpxc"), [1, 1, 1, 1, 0, 0])),
                            ["cells"], "minLength", via="propertyNames")
        self.assertRejected(H, changed(HEATMAP_ADMIN_STATE, (("cells", "ws7gr2m"), [1, 1, 1, 1, 0, 0])),
                            ["cells"], "maxLength", via="propertyNames")

    def test_cell_values(self):
        F = HEATMAP_FEED
        cell = ["state", "cells", "wsk52gh"]
        def with_cell(values):
            return changed(F, (tuple(cell), values))
        self.assertRejected(H, with_cell({"n": 1}), cell, "type")
        self.assertRejected(H, with_cell([3, 212.5, 41.0, 96.5, 1763711000000]), cell, "minItems")
        self.assertRejected(H, with_cell([3, 212.5, "41", 96.5, 1, 2]), cell + [2], "type")
        self.assertRejected(H, with_cell([-1, 212.5, 41.0, 96.5, 1, 2]), cell + [0], "minimum")
        self.assertRejected(H, with_cell([2.5, 212.5, 41.0, 96.5, 1, 2]), cell + [0], "type")
        self.assertRejected(H, with_cell([None, 212.5, 41.0, 96.5, 1, 2]), cell + [0], "type")
        self.assertRejected(H, with_cell([3, None, 41.0, 96.5, 1, 2]), cell + [1], "type")
        self.assertRejected(H, with_cell([3, 212.5, 41.0, 96.5, 1.5, 2]), cell + [4], "type")
        self.assertRejected(H, with_cell([3, 212.5, 41.0, 96.5, 1, -2]), cell + [5], "minimum")
        self.assertRejected(H, with_cell([3, 212.5, 41.0, 96.5, 1, 2, True]), cell + [6], "type")

    def test_feed_shape(self):
        F = HEATMAP_FEED
        self.assertRejected(H, changed(F, (("state",),)), [], "required", "'state'")
        self.assertRejected(H, changed(F, (("windows",),)), [], "required", "'windows'")
        self.assertRejected(H, changed(F, (("state", "cells"),)), ["state"], "required", "'cells'")
        self.assertRejected(H, changed(F, (("state", "ts"), 1)), ["state"], "additionalProperties")
        self.assertRejected(H, changed(F, (("windows", 0, "end"),)), ["windows", 0], "required", "'end'")
        self.assertRejected(H, changed(F, (("windows", 0, "size_s"), 0)), ["windows", 0, "size_s"], "minimum")
        self.assertRejected(H, changed(F, (("windows", 0, "closed"), True)), ["windows", 0],
                            "additionalProperties")
        # The closed-window and admin-result fields are not a feed's.
        self.assertRejected(H, changed(F, (("cells",), {})), ["cells"], "not")
        self.assertRejected(H, changed(F, (("amended",), False)), ["amended"], "not")
        # The unattended layer has no windows.
        self.assertRejected(H, changed(HEATMAP_UNATTENDED, (("windows",), HEATMAP_FEED["windows"][:1])),
                            ["windows"], "maxItems")

    def test_closed_window_shape(self):
        C = HEATMAP_CLOSED
        self.assertRejected(H, changed(C, (("closed",), False)), ["closed"], "const")
        for field in ("window", "amended", "cells"):
            with self.subTest(missing=field):
                self.assertRejected(H, changed(C, ((field,),)), [], "required", "'%s'" % field)
        self.assertRejected(H, changed(C, (("window",), None)), ["window"], "type")
        self.assertRejected(H, changed(C, (("window", "start"),)), ["window"], "required", "'start'")
        self.assertRejected(H, changed(C, (("amended",), "no")), ["amended"], "type")
        self.assertRejected(H, changed(C, (("state",), {"cells": {}})), ["state"], "not")
        self.assertRejected(H, changed(C, (("windows",), [])), ["windows"], "not")

    def test_admin_result_shape(self):
        A = HEATMAP_ADMIN_STATE
        self.assertRejected(H, changed(A, (("cells",),)), [], "required", "'cells'")
        self.assertRejected(H, changed(A, (("window",), "state")), ["window"], "type")
        self.assertRejected(H, changed(A, (("window",), {"size_s": 900})), ["window"], "required")
        self.assertRejected(H, changed(A, (("windows",), [])), ["windows"], "not")
        self.assertRejected(H, changed(A, (("amended",), True)), ["amended"], "not")


class TestRolloutPayloads(SchemaTestBase):
    def test_examples(self):
        for doc in ROLLOUT_EXAMPLES + (ROLLOUT_PAUSED_DEVICES,):
            with self.subTest(id=doc["id"], state=doc["state"]):
                self.assertValid(RO, doc)

    def test_every_state(self):
        self.assertValid(RO, changed(ROLLOUT_RUNNING, (("state",), "paused"),
                                     (("reason",), "paused by the operator")))
        self.assertValid(RO, changed(ROLLOUT_RUNNING, (("state",), "aborted"),
                                     (("reason",), "2 devices failed (limit 2)")))
        self.assertValid(RO, changed(ROLLOUT_COMPLETED, (("reason",), "")))
        self.assertValid(RO, changed(ROLLOUT_DRAFT, (("target_type",), "jt808")))
        # A device found on the new version while the campaign is a draft.
        self.assertValid(RO, changed(ROLLOUT_DRAFT, (("counts", "pending"), 1),
                                     (("counts", "succeeded"), 1)))

    def test_as_admin_results(self):
        self.assertValid("cmd-response.schema.json", {"ok": True, "result": ROLLOUT_PAUSED_DEVICES})
        self.assertValid("cmd-response.schema.json",
                         {"ok": True, "result": {"rollouts": [ROLLOUT_RUNNING, ROLLOUT_EMPTY]}})

    def test_required(self):
        for field in ROLLOUT_RUNNING:
            with self.subTest(missing=field):
                self.assertRejected(RO, changed(ROLLOUT_RUNNING, ((field,),)),
                                    [], "required", "'%s'" % field)
        for field in ROLLOUT_RUNNING["counts"]:
            with self.subTest(missing="counts." + field):
                self.assertRejected(RO, changed(ROLLOUT_RUNNING, (("counts", field),)),
                                    ["counts"], "required", "'%s'" % field)
        for field in ROLLOUT_RUNNING["groups"][0]:
            with self.subTest(missing="groups[0]." + field):
                self.assertRejected(RO, changed(ROLLOUT_RUNNING, (("groups", 0, field),)),
                                    ["groups", 0], "required", "'%s'" % field)
        for field in ROLLOUT_PAUSED_DEVICES["devices"][0]:
            with self.subTest(missing="devices[0]." + field):
                self.assertRejected(RO, changed(ROLLOUT_PAUSED_DEVICES, (("devices", 0, field),)),
                                    ["devices", 0], "required", "'%s'" % field)

    def test_values(self):
        R = ROLLOUT_RUNNING
        self.assertRejected(RO, changed(R, (("id",), "Rooms-2.1.0")), ["id"], "pattern")
        self.assertRejected(RO, changed(R, (("id",), "")), ["id"], "pattern")
        self.assertRejected(RO, changed(R, (("id",), "r" * 65)), ["id"], "pattern")
        self.assertRejected(RO, changed(R, (("state",), "finished")), ["state"], "enum")
        self.assertRejected(RO, changed(R, (("target_type",), "lorawan")), ["target_type"], "enum")
        self.assertRejected(RO, changed(R, (("version",), "2.1 beta")), ["version"], "pattern")
        self.assertRejected(RO, changed(R, (("version",), "")), ["version"], "pattern")
        self.assertRejected(RO, changed(R, (("model",), None)), ["model"], "type")
        self.assertRejected(RO, changed(R, (("group",), -1)), ["group"], "minimum")
        self.assertRejected(RO, changed(R, (("total",), 4.5)), ["total"], "type")
        self.assertRejected(RO, changed(R, (("total",), "4")), ["total"], "type")
        self.assertRejected(RO, changed(R, (("blackout_now",), 0)), ["blackout_now"], "type")
        self.assertRejected(RO, changed(R, (("updated",), -1)), ["updated"], "minimum")
        self.assertRejected(RO, changed(R, (("ts",), 1763712061000.5)), ["ts"], "type")
        self.assertRejected(RO, changed(R, (("site",), "houpu")), [], "additionalProperties", "'site'")

    def test_counts(self):
        R = ROLLOUT_RUNNING
        self.assertRejected(RO, changed(R, (("counts", "pending"), -1)), ["counts", "pending"], "minimum")
        self.assertRejected(RO, changed(R, (("counts", "failed"), True)), ["counts", "failed"], "type")
        self.assertRejected(RO, changed(R, (("counts", "queued"), 0)), ["counts"], "additionalProperties")
        self.assertRejected(RO, changed(R, (("counts",), [2, 0, 1, 0, 1, 0])), ["counts"], "type")

    def test_groups(self):
        R = ROLLOUT_RUNNING
        self.assertRejected(RO, changed(R, (("groups", 0, "name"), "Canary")), ["groups", 0, "name"], "pattern")
        self.assertRejected(RO, changed(R, (("groups", 1, "name"), "wave")), ["groups", 1, "name"], "pattern")
        self.assertRejected(RO, changed(R, (("groups", 1, "name"), "wave 01")), ["groups", 1, "name"], "pattern")
        self.assertRejected(RO, changed(R, (("groups", 0, "name"), "wave 0")), ["groups", 0, "name"], "pattern")
        self.assertRejected(RO, changed(R, (("groups", 1, "total"), 0)), ["groups", 1, "total"], "minimum")
        self.assertRejected(RO, changed(R, (("groups", 1, "failed"), -1)), ["groups", 1, "failed"], "minimum")
        self.assertRejected(RO, changed(R, (("groups", 1, "group"), "1")), ["groups", 1, "group"], "type")
        self.assertRejected(RO, changed(R, (("groups", 1, "pct"), 50)), ["groups", 1], "additionalProperties")
        self.assertRejected(RO, changed(R, (("groups",), {"canary": 1})), ["groups"], "type")

    def test_devices(self):
        D = ROLLOUT_PAUSED_DEVICES
        self.assertRejected(RO, changed(D, (("devices", 0, "device"), "room-1")),
                            ["devices", 0, "device"], "pattern")
        self.assertRejected(RO, changed(D, (("devices", 0, "state"), "refused")),
                            ["devices", 0, "state"], "enum")
        self.assertRejected(RO, changed(D, (("devices", 0, "attempts"), -1)),
                            ["devices", 0, "attempts"], "minimum")
        self.assertRejected(RO, changed(D, (("devices", 0, "gateway"), "GW")),
                            ["devices", 0, "gateway"], "pattern")
        self.assertRejected(RO, changed(D, (("devices", 0, "bus"), "")),
                            ["devices", 0], "additionalProperties")
        self.assertValid(RO, changed(D, (("devices", 0, "gateway"), "")))

    def test_reason_by_state(self):
        self.assertRejected(RO, changed(ROLLOUT_RUNNING, (("reason",), "resumed")),
                            ["reason"], "const")
        self.assertRejected(RO, changed(ROLLOUT_DRAFT, (("reason",), "planned")),
                            ["reason"], "const")
        self.assertRejected(RO, changed(ROLLOUT_PAUSED, (("reason",), "")),
                            ["reason"], "minLength")
        self.assertRejected(RO, changed(ROLLOUT_PAUSED, (("state",), "aborted"), (("reason",), "")),
                            ["reason"], "minLength")

    def test_counts_by_state(self):
        for state in ("updating", "verifying", "failed"):
            with self.subTest(draft_with=state):
                self.assertRejected(RO, changed(ROLLOUT_DRAFT, (("counts", "pending"), 1),
                                                (("counts", state), 1)),
                                    ["counts", state], "const")
        for state in ("pending", "deferred", "updating", "verifying"):
            with self.subTest(completed_with=state):
                self.assertRejected(RO, changed(ROLLOUT_COMPLETED, (("counts", "failed"), 0),
                                                (("counts", state), 1)),
                                    ["counts", state], "const")


class TestFirmwareJobPayloads(SchemaTestBase):
    def test_examples(self):
        for doc in JOB_EXAMPLES:
            with self.subTest(device=doc["device"], state=doc["state"], error=doc["error"]):
                self.assertValid(FJ, doc)

    def test_every_refusal_code(self):
        for code in ("malformed_manifest", "unknown_key", "bad_signature", "version_rejected",
                     "unsupported_target", "wrong_target", "wrong_model", "size_mismatch",
                     "sha256_mismatch"):
            with self.subTest(refusal=code):
                self.assertValid(FJ, changed(JOB_REFUSED, (("refusal",), code)))

    def test_required(self):
        for field in JOB_DOWNLOADING:
            with self.subTest(missing=field):
                self.assertRejected(FJ, changed(JOB_DOWNLOADING, ((field,),)),
                                    [], "required", "'%s'" % field)

    def test_values(self):
        J = JOB_DOWNLOADING
        self.assertRejected(FJ, changed(J, (("campaign",), "")), ["campaign"], "pattern")
        self.assertRejected(FJ, changed(J, (("campaign",), "Rooms")), ["campaign"], "pattern")
        self.assertRejected(FJ, changed(J, (("campaign",), "r" * 65)), ["campaign"], "pattern")
        self.assertRejected(FJ, changed(J, (("device",), "Room-1")), ["device"], "pattern")
        self.assertRejected(FJ, changed(J, (("attempt",), 0)), ["attempt"], "minimum")
        self.assertRejected(FJ, changed(J, (("attempt",), "1")), ["attempt"], "type")
        self.assertRejected(FJ, changed(J, (("state",), "done")), ["state"], "enum")
        self.assertRejected(FJ, changed(J, (("state",), "refused")), ["state"], "enum")
        self.assertRejected(FJ, changed(J, (("bytes",), -1)), ["bytes"], "minimum")
        self.assertRejected(FJ, changed(J, (("bytes",), 1.5)), ["bytes"], "type")
        self.assertRejected(FJ, changed(J, (("total",), "30010")), ["total"], "type")
        self.assertRejected(FJ, changed(J, (("ts",), -5)), ["ts"], "minimum")
        self.assertRejected(FJ, changed(JOB_FAILED_DEVICE, (("error",), None)), ["error"], "type")
        self.assertRejected(FJ, changed(JOB_SUCCEEDED, (("version",), 2.1)), ["version"], "type")
        self.assertRejected(FJ, changed(JOB_REFUSED, (("refusal",), "bad_crc")), ["refusal"], "enum")
        self.assertRejected(FJ, changed(J, (("gateway",), "gw-test")), [], "additionalProperties",
                            "'gateway'")

    def test_failed_says_why(self):
        self.assertRejected(FJ, changed(JOB_FAILED_DEVICE, (("error",), "")), ["error"], "minLength")
        self.assertRejected(FJ, changed(JOB_REFUSED, (("error",), "")), ["error"], "minLength")

    def test_only_failed_has_error_or_refusal(self):
        for doc in (JOB_DOWNLOADING, JOB_VERIFYING, JOB_INSTALLING, JOB_SUCCEEDED):
            with self.subTest(state=doc["state"]):
                self.assertRejected(FJ, changed(doc, (("error",), "timeout")), ["error"], "const")
                self.assertRejected(FJ, changed(doc, (("refusal",), "wrong_model")), ["refusal"], "const")

    def test_succeeded_names_the_version(self):
        self.assertRejected(FJ, changed(JOB_SUCCEEDED, (("version",), "")), ["version"], "minLength")
        for doc in (JOB_DOWNLOADING, JOB_VERIFYING, JOB_INSTALLING, JOB_FAILED_DEVICE):
            with self.subTest(state=doc["state"]):
                self.assertRejected(FJ, changed(doc, (("version",), "2.1.0")), ["version"], "const")


class TestRolloutConsistency(unittest.TestCase):
    """validate_payloads.rollout_problems and firmware_job_problems: what the
    schemas cannot express."""

    def test_examples_are_consistent(self):
        for doc in ROLLOUT_EXAMPLES + (ROLLOUT_PAUSED_DEVICES,):
            with self.subTest(id=doc["id"], state=doc["state"]):
                self.assertEqual(vp.rollout_problems(doc), [])
        for doc in JOB_EXAMPLES:
            with self.subTest(device=doc["device"], state=doc["state"]):
                self.assertEqual(vp.firmware_job_problems(doc), [])

    def test_counts_add_up_to_total(self):
        doc = changed(ROLLOUT_RUNNING, (("counts", "pending"), 3))
        self.assertEqual(vp.rollout_problems(doc), [("$.counts", "counts add up to 5, total is 4")])
        doc = changed(ROLLOUT_EMPTY, (("total",), 1))
        self.assertEqual(vp.rollout_problems(doc), [
            ("$.counts", "counts add up to 0, total is 1"),
            ("$.groups", "groups hold 0 devices, total is 1")])

    def test_groups_add_up_to_total_and_counts(self):
        doc = changed(ROLLOUT_RUNNING, (("groups", 2, "total"), 3))
        self.assertEqual(vp.rollout_problems(doc), [("$.groups", "groups hold 5 devices, total is 4")])
        doc = changed(ROLLOUT_RUNNING, (("groups",), ROLLOUT_RUNNING["groups"][:2]))
        self.assertEqual(vp.rollout_problems(doc), [("$.groups", "groups hold 2 devices, total is 4")])
        doc = changed(ROLLOUT_COMPLETED, (("groups", 2, "failed"), 0), (("groups", 2, "succeeded"), 2))
        self.assertEqual(vp.rollout_problems(doc), [
            ("$.groups", "4 succeeded in the groups, counts.succeeded is 3"),
            ("$.groups", "0 failed in the groups, counts.failed is 1")])

    def test_group_succeeded_and_failed_within_its_total(self):
        doc = changed(ROLLOUT_PAUSED, (("groups", 0, "succeeded"), 1),
                      (("counts", "succeeded"), 1), (("counts", "pending"), 1))
        self.assertEqual(vp.rollout_problems(doc), [("$.groups[0]", "1 succeeded + 1 failed of 1 devices")])

    def test_groups_numbered_by_position(self):
        doc = changed(ROLLOUT_RUNNING, (("groups", 1, "group"), 2))
        self.assertEqual(vp.rollout_problems(doc), [("$.groups[1].group", "group 2 at position 1")])
        doc = changed(ROLLOUT_RUNNING, (("groups", 1, "name"), "canary"))
        self.assertEqual(vp.rollout_problems(doc),
                         [("$.groups[1].name", "'canary' at position 1 (expected 'wave 1')")])
        doc = changed(ROLLOUT_RUNNING, (("groups", 2, "name"), "wave 3"))
        self.assertEqual(vp.rollout_problems(doc),
                         [("$.groups[2].name", "'wave 3' at position 2 (expected 'wave 2')")])
        # Without a canary the waves are numbered from group 0 on.
        no_canary = changed(ROLLOUT_RUNNING, (("groups", 0, "name"), "wave 1"),
                            (("groups", 1, "name"), "wave 2"), (("groups", 2, "name"), "wave 3"))
        self.assertEqual(vp.rollout_problems(no_canary), [])
        doc = changed(ROLLOUT_RUNNING, (("groups", 0, "name"), "wave 1"))
        self.assertEqual(vp.rollout_problems(doc), [
            ("$.groups[1].name", "'wave 1' at position 1 (expected 'wave 2', no canary)"),
            ("$.groups[2].name", "'wave 2' at position 2 (expected 'wave 3', no canary)")])
        doc = changed(no_canary, (("groups", 0, "name"), "wave 2"))
        self.assertEqual(vp.rollout_problems(doc), [
            ("$.groups[0].name", "'wave 2' at position 0 (expected 'wave 1', no canary)")])
        doc = changed(no_canary, (("groups", 2, "name"), "canary"))
        self.assertEqual(vp.rollout_problems(doc),
                         [("$.groups[2].name", "'canary' at position 2 (expected 'wave 3', no canary)")])

    def test_current_group(self):
        doc = changed(ROLLOUT_RUNNING, (("group",), 4))
        self.assertEqual(vp.rollout_problems(doc), [("$.group", "group 4 of 3 groups")])
        # Past the last group only once every group is done; completed means past it.
        self.assertEqual(vp.rollout_problems(changed(ROLLOUT_RUNNING, (("group",), 3))), [])
        doc = changed(ROLLOUT_COMPLETED, (("group",), 2))
        self.assertEqual(vp.rollout_problems(doc), [("$.group", "completed at group 2 of 3 groups")])
        doc = changed(ROLLOUT_EMPTY, (("group",), 1))
        self.assertEqual(vp.rollout_problems(doc), [("$.group", "group 1 of 0 groups")])

    def test_times_in_order(self):
        doc = changed(ROLLOUT_RUNNING, (("created",), 1763712061001))
        self.assertEqual(vp.rollout_problems(doc), [("$.updated", "updated before created")])
        doc = changed(ROLLOUT_RUNNING, (("ts",), 1763712060999))
        self.assertEqual(vp.rollout_problems(doc), [("$.ts", "ts before updated")])

    def test_devices_agree_with_the_status(self):
        D = ROLLOUT_PAUSED_DEVICES
        doc = changed(D, (("devices",), D["devices"][:2]))
        self.assertEqual(vp.rollout_problems(doc), [
            ("$.devices", "2 devices listed, total is 3"),
            ("$.devices", "1 devices pending, counts.pending is 2")])
        doc = changed(D, (("devices", 0, "state"), "deferred"))
        self.assertEqual(vp.rollout_problems(doc), [
            ("$.devices", "1 devices pending, counts.pending is 2"),
            ("$.devices", "1 devices deferred, counts.deferred is 0")])
        doc = changed(D, (("devices", 2, "group"), 2))
        self.assertEqual(vp.rollout_problems(doc), [("$.devices[2].group", "group 2 of 2 groups")])

    def test_job_bytes(self):
        doc = changed(JOB_DOWNLOADING, (("bytes",), 30011))
        self.assertEqual(vp.firmware_job_problems(doc), [("$.bytes", "30011 bytes of 30010")])
        doc = changed(JOB_SELF_ROLLED_BACK, (("bytes",), 1))
        self.assertEqual(vp.firmware_job_problems(doc), [("$.bytes", "1 bytes of 0")])
        doc = changed(JOB_VERIFYING, (("bytes",), 30009))
        self.assertEqual(vp.firmware_job_problems(doc), [("$.bytes", "verifying after 30009 bytes of 30010")])
        self.assertEqual(vp.firmware_job_problems(changed(JOB_INSTALLING, (("bytes",), 30010))), [])

    def test_wrong_types_are_left_to_the_schema(self):
        for doc in ({}, {"total": "4", "counts": [], "groups": {}},
                    {"total": 4, "counts": {"pending": "2"}, "groups": [None, 1], "group": "1",
                     "created": 2, "updated": None, "devices": "all"},
                    {"total": True, "groups": [{"group": 0, "total": "1"}], "state": "completed",
                     "group": False}):
            with self.subTest(doc=doc):
                self.assertEqual(vp.rollout_problems(doc), [])
        for doc in ({}, {"bytes": "5", "total": 4}, {"bytes": 5, "total": None, "state": "verifying"},
                    {"bytes": True, "total": 0}):
            with self.subTest(doc=doc):
                self.assertEqual(vp.firmware_job_problems(doc), [])


class TestTopicMapping(unittest.TestCase):
    def test_classify(self):
        cases = {
            "sanigate/v1/houpu/devices/room-07/telemetry": ("telemetry.schema.json", {"device": "room-07"}),
            "city/x/devices/bin-1/event": ("event.schema.json", {"device": "bin-1"}),
            "sanigate/v1/houpu/devices/bin-1/status": ("device-status.schema.json", {"device": "bin-1"}),
            "sanigate/v1/houpu/gateway/gw-1/status": ("gateway-status.schema.json",
                                                      {"gateway": "gw-1", "site": "houpu"}),
            "sanigate/v1/houpu/devices/bin-1/cmd/open": (None, None),
            "sanigate/v1/houpu/fleet/health/bin-1": ("fleet-health.schema.json", {"device": "bin-1"}),
            "sanigate/v1/houpu/fleet/health/gateway/gw-1": ("fleet-health.schema.json", {"gateway": "gw-1"}),
            "sanigate/v1/houpu/fleet/events": (None, None),
            "sanigate/v1/houpu/heatmap/bin_fill": ("heatmap.schema.json",
                                                   {"site": "houpu", "layer": "bin_fill", "closed": False}),
            "sanigate/v1/houpu/heatmap/alarms/closed": ("heatmap.schema.json",
                                                        {"site": "houpu", "layer": "alarms", "closed": True}),
            "x/heatmap/bins": ("heatmap.schema.json", {"site": "x", "layer": "bins", "closed": False}),
            "sanigate/v1/houpu/heatmap/": (None, None),
            "sanigate/v1/houpu/heatmap//closed": (None, None),
            "sanigate/v1/houpu/fleet/admin/heatmap": (None, None),
            "sanigate/v1/houpu/admin/reply/sanictl-1": (None, None),
            # A device or gateway that happens to be called "heatmap".
            "sanigate/v1/houpu/devices/heatmap/telemetry": ("telemetry.schema.json", {"device": "heatmap"}),
            "sanigate/v1/houpu/devices/heatmap/cmd/closed": (None, None),
            "sanigate/v1/houpu/devices/heatmap/foo": (None, None),
            "sanigate/v1/houpu/gateway/heatmap/status": ("gateway-status.schema.json",
                                                         {"gateway": "heatmap", "site": "houpu"}),
            "sanigate/v1/houpu/fleet/health/heatmap": ("fleet-health.schema.json", {"device": "heatmap"}),
            "sanigate/v1/houpu/fleet/rollouts/rooms-2-1-0": ("fleet-rollout.schema.json", {"id": "rooms-2-1-0"}),
            "x/fleet/rollouts/health": ("fleet-rollout.schema.json", {"id": "health"}),
            "sanigate/v1/houpu/fleet/rollouts/": (None, None),
            "fleet/rollouts/r-1": (None, None),
            "sanigate/v1/houpu/fleet/admin/rollout_status": (None, None),
            "sanigate/v1/houpu/gateway/gw-1/firmware/room-1": ("firmware-job.schema.json", {"device": "room-1"}),
            "sanigate/v1/houpu/gateway/gw-1/firmware/gw-1": ("firmware-job.schema.json", {"device": "gw-1"}),
            # A device called "status" behind a gateway called "gateway".
            "sanigate/v1/houpu/gateway/gateway/firmware/status": ("firmware-job.schema.json",
                                                                  {"device": "status"}),
            "sanigate/v1/houpu/gateway/gw-1/firmware/": (None, None),
            "sanigate/v1/houpu/gateway//firmware/room-1": (None, None),
            "sanigate/v1/houpu/gateway/gw-1/admin/install": (None, None),
            "sanigate/v1/houpu/fleet/firmware/get": (None, None),
            "sanigate/v1/houpu/devices/firmware/status": ("device-status.schema.json", {"device": "firmware"}),
            "telemetry": (None, None),
        }
        for topic, expected in cases.items():
            with self.subTest(topic=topic):
                self.assertEqual(vp.classify(topic), expected)

    def test_split_line(self):
        self.assertEqual(vp.split_line("a/b {\"x\": 1}"), ("a/b", "{\"x\": 1}"))
        self.assertEqual(vp.split_line("a/b\t{\"x\": 1}"), ("a/b", "{\"x\": 1}"))
        self.assertEqual(vp.split_line("a/b"), ("a/b", ""))


class TestValidatorScript(unittest.TestCase):
    TOPIC_T = "sanigate/v1/houpu/devices/room-07/telemetry"
    TOPIC_E = "sanigate/v1/houpu/devices/bin-0412/event"
    TOPIC_G = "sanigate/v1/houpu/gateway/gw-houpu-01/status"

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def write(self, name, lines):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def run_script(self, *args):
        proc = subprocess.run([sys.executable, VALIDATOR_SCRIPT] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)
        return proc.returncode, proc.stdout.splitlines(), proc.stderr

    def test_all_valid(self):
        path = self.write("ok.txt", [
            self.TOPIC_T + " " + json.dumps(CONTRACT_READING),
            self.TOPIC_E + "\t" + json.dumps(CONTRACT_EVENT),
            self.TOPIC_G + " " + json.dumps({"online": False, "gateway": "gw-houpu-01", "ts": 1}),
            "sanigate/v1/houpu/devices/room-07/status ",      # retained clear
            "sanigate/v1/houpu/devices/bin-0412/status (null)",  # as mosquitto_sub prints it
            "sanigate/v1/houpu/dashboards/bins {\"anything\":1}",  # unknown topic
            "",
        ])
        rc, out, err = self.run_script(SCHEMA_DIR, path)
        self.assertEqual(out, ["schema: 3 valid, 0 invalid, 3 skipped"], err)
        self.assertEqual(rc, 0, err)

    def test_invalid_messages(self):
        bad_ts = changed(CONTRACT_READING, (("ts",), "soon"))
        other_device = changed(CONTRACT_EVENT, (("device",), "bin-0413"))
        path = self.write("bad.txt", [
            self.TOPIC_T + " " + json.dumps(CONTRACT_READING),
            self.TOPIC_T + " " + json.dumps(bad_ts),
            self.TOPIC_E + " " + json.dumps(other_device),
            self.TOPIC_E + " {not json",
        ])
        rc, out, err = self.run_script(SCHEMA_DIR, path)
        self.assertEqual(rc, 1, err)
        self.assertEqual(len(out), 4, out)
        self.assertTrue(out[0].startswith("%s:2: %s: $.ts: " % (path, self.TOPIC_T)), out[0])
        self.assertTrue(out[1].startswith("%s:3: %s: $.device: " % (path, self.TOPIC_E)), out[1])
        self.assertIn("bin-0412", out[1])
        self.assertTrue(out[2].startswith("%s:4: %s: $: " % (path, self.TOPIC_E)), out[2])
        self.assertEqual(out[3], "schema: 1 valid, 3 invalid, 0 skipped")

    def test_heatmap_topics(self):
        feed_t = "sanigate/v1/houpu/heatmap/"
        wrong_window = changed(HEATMAP_FEED, (("windows", 0, "end"), 1763712600000))
        path = self.write("hm.txt", [
            feed_t + "bin_fill " + json.dumps(HEATMAP_FEED),                    # 1 valid
            feed_t + "alarms/closed " + json.dumps(HEATMAP_CLOSED),             # 2 valid
            feed_t + "vehicle_coverage " + json.dumps(HEATMAP_VEHICLES),        # 3 valid
            feed_t + "unattended\t" + json.dumps(HEATMAP_UNATTENDED),           # 4 valid
            feed_t + "overflow " + json.dumps(HEATMAP_FEED),                    # 5 layer
            feed_t + "alarms " + json.dumps(HEATMAP_CLOSED),                    # 6 closed on feed
            feed_t + "bin_fill/closed " + json.dumps(HEATMAP_FEED),             # 7 feed on closed
            "sanigate/v1/xinglin/heatmap/bin_fill " + json.dumps(HEATMAP_FEED),  # 8 site
            feed_t + "bin_fill " + json.dumps(wrong_window),                    # 9 window length
            feed_t + "bins {\"v\":1}",                                          # 10 schema
            feed_t + "workers (null)",                                          # cleared: skipped
            "sanigate/v1/houpu/fleet/admin/heatmap {\"layer\":\"bin_fill\"}",    # request: skipped
        ])
        rc, out, err = self.run_script(SCHEMA_DIR, path)
        self.assertEqual(rc, 1, err)
        self.assertEqual(out[-1], "schema: 4 valid, 6 invalid, 2 skipped", out)
        expect = [(5, "$.layer: 'bin_fill' does not match"),
                  (6, "$.closed: closed is true but the topic says false"),
                  (7, "$.closed: closed is false but the topic says true"),
                  (8, "$.site: 'houpu' does not match"),
                  (9, "$.windows[0].end: end - start is 600000 ms, size_s is 900 s"),
                  (10, "$: ")]
        self.assertEqual(len(out), len(expect) + 1, out)
        for line, (lineno, text) in zip(out, expect):
            topic_and_rest = line[len(path) + 1:]
            self.assertTrue(topic_and_rest.startswith("%d: " % lineno), line)
            self.assertIn(": " + text, line)

    def test_rollout_topics(self):
        rollout_t = "sanigate/v1/houpu/fleet/rollouts/"
        job_t = "sanigate/v1/houpu/gateway/gw-test/firmware/"
        path = self.write("ro.txt", [
            rollout_t + "rooms-2-1-0 " + json.dumps(ROLLOUT_RUNNING),                    # 1 valid
            rollout_t + "bad-crc " + json.dumps(ROLLOUT_PAUSED),                         # 2 valid
            job_t + "room-1 " + json.dumps(JOB_DOWNLOADING),                             # 3 valid
            job_t + "gw-test\t" + json.dumps(JOB_SELF_ROLLED_BACK),                      # 4 valid
            rollout_t + "other " + json.dumps(ROLLOUT_RUNNING),                          # 5 id
            rollout_t + "bad-crc " + json.dumps(ROLLOUT_PAUSED_DEVICES),                 # 6 devices
            rollout_t + "rooms-2-1-0 " + json.dumps(changed(ROLLOUT_RUNNING, (("total",), 5))),  # 7 sums
            job_t + "room-2 " + json.dumps(JOB_SUCCEEDED),                               # 8 device
            job_t + "room-1 " + json.dumps(changed(JOB_DOWNLOADING, (("bytes",), 40000))),  # 9 bytes
            job_t + "room-1 " + json.dumps(changed(JOB_FAILED_DEVICE, (("error",), ""))),  # 10 schema
            rollout_t + "old (null)",                                                  # cleared: skipped
            job_t + "room-3 ",                                                         # cleared: skipped
            "sanigate/v1/houpu/gateway/gw-test/admin/install {\"campaign\":\"x\"}",      # request: skipped
        ])
        rc, out, err = self.run_script(SCHEMA_DIR, path)
        self.assertEqual(rc, 1, err)
        self.assertEqual(out[-1], "schema: 4 valid, 6 invalid, 3 skipped", out)
        expect = [(5, "$.id: 'rooms-2-1-0' does not match the topic's {id} 'other'"),
                  (6, "$.devices: the retained status lists no devices"),
                  (7, "$.counts: counts add up to 4, total is 5; and $.groups: groups hold 4 devices, total is 5"),
                  (8, "$.device: 'room-1' does not match the topic's {device} 'room-2'"),
                  (9, "$.bytes: 40000 bytes of 30010"),
                  (10, "$.error: ")]
        self.assertEqual(len(out), len(expect) + 1, out)
        for line, (lineno, text) in zip(out, expect):
            topic_and_rest = line[len(path) + 1:]
            self.assertTrue(topic_and_rest.startswith("%d: " % lineno), line)
            self.assertIn(": " + text, line)

    def test_gateway_id_must_match_topic(self):
        path = self.write("gw.txt", [
            self.TOPIC_G + " " + json.dumps({"online": False, "gateway": "gw-other", "ts": 1}),
        ])
        rc, out, err = self.run_script(SCHEMA_DIR, path)
        self.assertEqual(rc, 1, err)
        self.assertIn("$.gateway", out[0])
        self.assertEqual(out[-1], "schema: 0 valid, 1 invalid, 0 skipped")

    def test_usage_errors(self):
        rc, out, err = self.run_script()
        self.assertEqual(rc, 2)
        self.assertIn("usage", err)
        rc, out, err = self.run_script(SCHEMA_DIR)
        self.assertEqual(rc, 2)
        missing = os.path.join(self.tmp.name, "missing.txt")
        rc, out, err = self.run_script(SCHEMA_DIR, missing)
        self.assertEqual(rc, 2)
        path = self.write("one.txt", [self.TOPIC_T + " " + json.dumps(CONTRACT_READING)])
        rc, out, err = self.run_script(os.path.join(self.tmp.name, "no-schemas"), path)
        self.assertEqual(rc, 2)

    def test_nothing_validated(self):
        path = self.write("empty.txt", [
            "sanigate/v1/houpu/devices/room-07/status",
            "sanigate/v1/houpu/fleet/firmware/get {\"sha256\":\"ab\",\"offset\":0}",
        ])
        rc, out, err = self.run_script(SCHEMA_DIR, path)
        self.assertEqual(out, ["schema: 0 valid, 0 invalid, 2 skipped"])
        self.assertEqual(rc, 2)


class TestHeatmapConsistency(unittest.TestCase):
    """validate_payloads.heatmap_problems: what the schema cannot express."""

    def problems(self, doc):
        return vp.heatmap_problems(doc)

    def test_examples_are_consistent(self):
        for doc in (HEATMAP_FEED, HEATMAP_VEHICLES, HEATMAP_UNATTENDED, HEATMAP_CLOSED,
                    HEATMAP_ADMIN_STATE):
            with self.subTest(layer=doc["layer"]):
                self.assertEqual(self.problems(doc), [])

    def test_merge_rules_for_every_field(self):
        doc = changed(HEATMAP_VEHICLES, (("merge",), HM_MERGE + ["add"]))
        self.assertEqual(self.problems(doc), [("$.merge", "7 merge rules for 8 fields")])

    def test_a_value_for_every_field(self):
        doc = changed(HEATMAP_VEHICLES, (("windows", 0, "cells", "ws7gr2q"), [1, 18.0, 18.0, 18.0, 1, 1, 1]))
        self.assertEqual(self.problems(doc), [("$.windows[0].cells.ws7gr2q", "7 values for 8 fields")])
        doc = changed(HEATMAP_FEED, (("state", "cells", "wsk52gh"), [3, 212.5, 41.0, 96.5, 1, 2, 0]))
        self.assertEqual(self.problems(doc), [("$.state.cells.wsk52gh", "7 values for 6 fields")])
        doc = changed(HEATMAP_CLOSED, (("cells", "ws7gpxcq"), [2, 2, 1, 1, 1, 1]))
        self.assertEqual(self.problems(doc), [("$.cells.ws7gpxcq", "6 values for 9 fields")])

    def test_window_spans(self):
        doc = changed(HEATMAP_FEED, (("windows", 2, "start"), 1763654400001))
        self.assertEqual(self.problems(doc),
                         [("$.windows[2].end", "end - start is 86399999 ms, size_s is 86400 s")])
        doc = changed(HEATMAP_FEED, (("windows", 1, "size_s"), 900), (("windows", 1, "end"), 1763712900000))
        self.assertEqual(self.problems(doc), [("$.windows[1].size_s", "two windows of 900 s")])
        doc = changed(HEATMAP_ADMIN_STATE, (("window",), {"size_s": 900, "start": 0, "end": 1000}))
        self.assertEqual(self.problems(doc), [("$.window.end", "end - start is 1000 ms, size_s is 900 s")])

    def test_closed_window_has_ended(self):
        doc = changed(HEATMAP_CLOSED, (("ts",), 1763712899999))
        self.assertEqual(self.problems(doc), [("$.window.end", "a closed window ending after ts")])
        self.assertEqual(self.problems(changed(HEATMAP_CLOSED, (("ts",), 1763712900000))), [])

    def test_wrong_types_are_left_to_the_schema(self):
        for doc in ({}, {"fields": "n"}, {"fields": HM_FIELDS, "state": [], "windows": {}},
                    {"fields": HM_FIELDS, "windows": [None, {"size_s": "900"}], "window": None,
                     "cells": {"ws7gr2m": "x"}}):
            self.assertEqual(self.problems(doc), [])


def main():
    global SCHEMA_DIR
    args = sys.argv[1:]
    if args and not args[0].startswith("-"):
        SCHEMA_DIR = os.path.abspath(args.pop(0))
    if not os.path.isdir(SCHEMA_DIR):
        sys.stderr.write("test_schemas: schema directory not found: %s\n" % SCHEMA_DIR)
        sys.exit(2)
    unittest.main(argv=[sys.argv[0]] + args)


if __name__ == "__main__":
    main()
