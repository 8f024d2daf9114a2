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
    "fleet-health.schema.json",
    "gateway-status.schema.json",
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
            "sanigate/v1/houpu/heatmap/bins {\"anything\":1}",  # unknown topic
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
            "sanigate/v1/houpu/fleet/rollouts/r-1 {\"ok\":true}",
        ])
        rc, out, err = self.run_script(SCHEMA_DIR, path)
        self.assertEqual(out, ["schema: 0 valid, 0 invalid, 2 skipped"])
        self.assertEqual(rc, 2)


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
