#!/usr/bin/python3
"""Check captured Sanigate MQTT messages against the JSON Schemas of the MQTT model.

Usage: validate_payloads.py SCHEMA_DIR FILE...

Each FILE holds one message a line: TOPIC, then one space or tab, then the JSON
payload. This is what `mosquitto_sub -v` prints (topic and payload separated by a
space); TOPIC<TAB>PAYLOAD is accepted as well.

The schema is chosen from the end of the topic, so any prefix works:
  .../devices/{device}/telemetry  -> telemetry.schema.json
  .../devices/{device}/event      -> event.schema.json
  .../devices/{device}/status     -> device-status.schema.json
  .../gateway/{gateway}/status    -> gateway-status.schema.json
  .../fleet/health/{device}, .../fleet/health/gateway/{gateway}
                                  -> fleet-health.schema.json
  .../{site}/heatmap/{layer}, .../{site}/heatmap/{layer}/closed
                                  -> heatmap.schema.json
  .../fleet/rollouts/{id}         -> fleet-rollout.schema.json
  .../gateway/{gateway}/firmware/{device}
                                  -> firmware-job.schema.json
Other topics, and messages with an empty payload (a retained message being
cleared; `mosquitto_sub -v` prints it as `(null)`), are counted as skipped.
Blank lines are ignored.

Besides the schema, the payload must agree with its topic: `device` equals the
{device} segment; in a gateway status, `gateway` and `site` (when present) equal
the {gateway} and {site} segments; in a heat map, `site` and `layer` equal the
{site} and {layer} segments, and a message is a closed window (`"closed":true`)
exactly when its topic ends in /closed. A heat map must also be consistent in
itself: as many `merge` rules as `fields`, as many values in each cell as
`fields`, each window `size_s` seconds long (end - start), window sizes of a
feed distinct, and a closed window not ending after the message's `ts`.
A rollout status must have `id` equal to the {id} segment and add up: the
counts and the groups' totals to `total`, the groups' succeeded and failed to
the counts; each group numbered and named by its position ("canary" first if
there is one, then "wave 1", "wave 2"...) and its succeeded + failed at most
its total; `group` at most the number of groups (equal once
completed); created <= updated <= ts; no `devices` list (only the admin
rollout_status result has one). A firmware job must have `device` equal to
the {device} segment, bytes <= total, and bytes = total while verifying.

Output: one line per invalid message,
  FILE:LINE: TOPIC: JSON_PATH: MESSAGE
then the summary `schema: N valid, M invalid, K skipped`.
Exit status: 0 all checked messages valid (and at least one checked),
1 some message invalid, 2 bad usage, unusable schemas or unreadable files,
or nothing was validated at all.

Needs only python3-jsonschema (4.10 in Debian 12); references between schema
files are resolved from a store holding every *.schema.json of SCHEMA_DIR,
keyed by its $id.
"""

import json
import os
import sys
import warnings

try:
    import jsonschema
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError, best_match
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write("validate_payloads: python3-jsonschema is not installed "
                     "(apt-get install python3-jsonschema)\n")
    sys.exit(2)

USAGE = "usage: validate_payloads.py SCHEMA_DIR FILE..."

# Topic shape -> schema file name.
TELEMETRY = "telemetry.schema.json"
EVENT = "event.schema.json"
DEVICE_STATUS = "device-status.schema.json"
GATEWAY_STATUS = "gateway-status.schema.json"
FLEET_HEALTH = "fleet-health.schema.json"
HEATMAP = "heatmap.schema.json"
FLEET_ROLLOUT = "fleet-rollout.schema.json"
FIRMWARE_JOB = "firmware-job.schema.json"
TOPIC_SCHEMAS = (TELEMETRY, EVENT, DEVICE_STATUS, GATEWAY_STATUS, FLEET_HEALTH,
                 HEATMAP, FLEET_ROLLOUT, FIRMWARE_JOB)

# How mosquitto_sub -v prints a zero-length payload.
EMPTY_PAYLOAD = "(null)"


class UsageError(Exception):
    """Something that makes the run itself impossible (exit 2)."""


def load_schemas(schema_dir):
    """Read every *.schema.json of schema_dir; return {file name: schema}.

    Each schema is checked against the draft 2020-12 meta-schema and must have
    an $id, since references between the files are resolved through it.
    """
    if not os.path.isdir(schema_dir):
        raise UsageError("schema directory not found: %s" % schema_dir)
    schemas = {}
    for name in sorted(os.listdir(schema_dir)):
        if not name.endswith(".schema.json"):
            continue
        path = os.path.join(schema_dir, name)
        try:
            with open(path, encoding="utf-8") as f:
                schema = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError("%s: cannot read schema: %s" % (path, e))
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as e:
            raise UsageError("%s: not a valid draft 2020-12 schema: %s"
                             % (path, e.message))
        if not isinstance(schema.get("$id"), str):
            raise UsageError("%s: schema has no $id" % path)
        schemas[name] = schema
    missing = [n for n in TOPIC_SCHEMAS if n not in schemas]
    if missing:
        raise UsageError("%s: missing %s" % (schema_dir, ", ".join(missing)))
    return schemas


def make_validators(schemas):
    """Return {file name: Draft202012Validator} sharing one $id-keyed store."""
    store = {s["$id"]: s for s in schemas.values()}
    validators = {}
    with warnings.catch_warnings():
        # RefResolver is deprecated in newer jsonschema releases, but it is
        # the only resolver 4.10 (Debian 12) has.
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, schema in schemas.items():
            resolver = jsonschema.RefResolver(base_uri=schema["$id"],
                                              referrer=schema, store=store)
            validators[name] = Draft202012Validator(schema, resolver=resolver)
    return validators


def classify(topic):
    """Return (schema file name, ids from the topic) or (None, None)."""
    seg = topic.split("/")
    if len(seg) >= 4 and seg[-3:-1] == ["fleet", "health"]:
        return FLEET_HEALTH, {"device": seg[-1]}
    if len(seg) >= 5 and seg[-4:-1] == ["fleet", "health", "gateway"]:
        return FLEET_HEALTH, {"gateway": seg[-1]}
    # {site}/fleet/rollouts/{id}
    if len(seg) >= 4 and seg[-3:-1] == ["fleet", "rollouts"] and seg[-1] and seg[-4]:
        return FLEET_ROLLOUT, {"id": seg[-1]}
    # gateway/{gateway}/firmware/{device}; before the gateway status, so that a
    # device called "status" is still a job.
    if (len(seg) >= 4 and seg[-4] == "gateway" and seg[-2] == "firmware"
            and seg[-3] and seg[-1]):
        return FIRMWARE_JOB, {"device": seg[-1]}
    # {site}/heatmap/{layer}[/closed]; not a device or gateway named "heatmap"
    # (.../devices/heatmap/{x}, .../devices/heatmap/cmd/closed).
    if (len(seg) >= 3 and seg[-2] == "heatmap" and seg[-1] and seg[-3]
            and seg[-3] not in ("devices", "gateway")):
        return HEATMAP, {"site": seg[-3], "layer": seg[-1], "closed": False}
    if (len(seg) >= 4 and seg[-3] == "heatmap" and seg[-1] == "closed"
            and seg[-2] and seg[-4] and seg[-4] not in ("devices", "gateway")):
        return HEATMAP, {"site": seg[-4], "layer": seg[-2], "closed": True}
    if len(seg) < 3 or not seg[-2]:
        return None, None
    if seg[-3] == "devices":
        ids = {"device": seg[-2]}
        if seg[-1] == "telemetry":
            return TELEMETRY, ids
        if seg[-1] == "event":
            return EVENT, ids
        if seg[-1] == "status":
            return DEVICE_STATUS, ids
    elif seg[-3] == "gateway" and seg[-1] == "status":
        ids = {"gateway": seg[-2]}
        if len(seg) >= 4 and seg[-4]:
            ids["site"] = seg[-4]
        return GATEWAY_STATUS, ids
    return None, None


def split_line(line):
    """Split 'TOPIC PAYLOAD' or 'TOPIC<TAB>PAYLOAD' at the first space or tab."""
    cut = [i for i in (line.find(" "), line.find("\t")) if i >= 0]
    if not cut:
        return line, ""
    i = min(cut)
    return line[:i], line[i + 1:]


def _reject_constant(name):
    raise ValueError("%s is not valid JSON" % name)


def _no_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key %r" % key)
        obj[key] = value
    return obj


def parse_payload(text):
    """Strict JSON: no NaN/Infinity, no duplicate keys. Raises ValueError."""
    return json.loads(text, parse_constant=_reject_constant,
                      object_pairs_hook=_no_duplicate_keys)


def _json_path(path):
    out = "$"
    for part in path:
        out += "[%d]" % part if isinstance(part, int) else "." + str(part)
    return out


def check_payload(validators, schema_name, ids, payload):
    """Return a list of (json path, message) problems; empty if valid."""
    validator = validators[schema_name]
    problems = []
    errors = list(validator.iter_errors(payload))
    if errors:
        best = best_match(errors)
        msg = best.message
        if len(errors) > 1:
            msg += " (and %d more error%s)" % (len(errors) - 1,
                                              "s" if len(errors) > 2 else "")
        problems.append((_json_path(best.absolute_path), msg))
    if isinstance(payload, dict):
        for field, expected in sorted(ids.items()):
            value = payload.get(field)
            if isinstance(expected, bool):
                # A flag the topic implies (absent = false).
                if value is None:
                    value = False
                if value is not expected:
                    problems.append(("$." + field, "%s is %s but the topic says "
                                     "%s" % (field, json.dumps(value),
                                             json.dumps(expected))))
            elif isinstance(value, str) and value != expected:
                problems.append(("$." + field, "%r does not match the topic's "
                                 "{%s} %r" % (value, field, expected)))
        if schema_name == HEATMAP:
            problems.extend(heatmap_problems(payload))
        elif schema_name == FLEET_ROLLOUT:
            if "devices" in payload:
                problems.append(("$.devices", "the retained status lists no devices "
                                 "(only the admin rollout_status result does)"))
            problems.extend(rollout_problems(payload))
        elif schema_name == FIRMWARE_JOB:
            problems.extend(firmware_job_problems(payload))
    return problems


def _count(value):
    """value if it is a JSON integer (not a boolean), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rollout_problems(doc):
    """What fleet-rollout.schema.json cannot say: the numbers of a rollout status
    must add up (counts and groups against total, groups against counts), groups
    are numbered and named by position, the current group lies within the plan (past its
    end once completed), created <= updated <= ts, and an admin 'devices' list
    agrees with the rest. Returns (json path, message) pairs; parts with the
    wrong type are left to the schema."""
    problems = []
    total = _count(doc.get("total"))
    counts = doc.get("counts")
    counts = counts if isinstance(counts, dict) else {}
    states = ("pending", "deferred", "updating", "verifying", "succeeded", "failed")
    n = [_count(counts.get(s)) for s in states]
    if total is not None and all(x is not None for x in n) and sum(n) != total:
        problems.append(("$.counts", "counts add up to %d, total is %d" % (sum(n), total)))

    groups = doc.get("groups")
    if isinstance(groups, list) and all(isinstance(g, dict) for g in groups):
        # Waves count from 1: after a canary group 1 is "wave 1", without one group 0 is.
        canary = bool(groups) and groups[0].get("name") == "canary"
        for i, g in enumerate(groups):
            path = "$.groups[%d]" % i
            index, name = _count(g.get("group")), g.get("name")
            if index is not None and index != i:
                problems.append((path + ".group", "group %d at position %d" % (index, i)))
            expected = "canary" if canary and i == 0 else "wave %d" % (i if canary else i + 1)
            if isinstance(name, str) and name != expected:
                problems.append((path + ".name", "%r at position %d (expected %r%s)"
                                 % (name, i, expected, "" if canary else ", no canary")))
            g_total, g_ok, g_failed = (_count(g.get(k)) for k in ("total", "succeeded", "failed"))
            if None not in (g_total, g_ok, g_failed) and g_ok + g_failed > g_total:
                problems.append((path, "%d succeeded + %d failed of %d devices"
                                 % (g_ok, g_failed, g_total)))
        sums = {}
        for key in ("total", "succeeded", "failed"):
            values = [_count(g.get(key)) for g in groups]
            sums[key] = sum(values) if None not in values else None
        if total is not None and sums["total"] is not None and sums["total"] != total:
            problems.append(("$.groups", "groups hold %d devices, total is %d"
                             % (sums["total"], total)))
        for key in ("succeeded", "failed"):
            have = _count(counts.get(key))
            if have is not None and sums[key] is not None and sums[key] != have:
                problems.append(("$.groups", "%d %s in the groups, counts.%s is %d"
                                 % (sums[key], key, key, have)))
        current = _count(doc.get("group"))
        if current is not None and current > len(groups):
            problems.append(("$.group", "group %d of %d groups" % (current, len(groups))))
        elif (current is not None and doc.get("state") == "completed"
              and current != len(groups)):
            problems.append(("$.group", "completed at group %d of %d groups"
                             % (current, len(groups))))

    created, updated, ts = (_count(doc.get(k)) for k in ("created", "updated", "ts"))
    if created is not None and updated is not None and updated < created:
        problems.append(("$.updated", "updated before created"))
    if updated is not None and ts is not None and ts < updated:
        problems.append(("$.ts", "ts before updated"))

    devices = doc.get("devices")
    if isinstance(devices, list) and all(isinstance(d, dict) for d in devices):
        if total is not None and len(devices) != total:
            problems.append(("$.devices", "%d devices listed, total is %d"
                             % (len(devices), total)))
        for s in states:
            have = _count(counts.get(s))
            listed = sum(1 for d in devices if d.get("state") == s)
            if have is not None and listed != have:
                problems.append(("$.devices", "%d devices %s, counts.%s is %d"
                                 % (listed, s, s, have)))
        if isinstance(groups, list):
            for i, d in enumerate(devices):
                g = _count(d.get("group"))
                if g is not None and g >= len(groups):
                    problems.append(("$.devices[%d].group" % i, "group %d of %d groups"
                                     % (g, len(groups))))
    return problems


def firmware_job_problems(doc):
    """What firmware-job.schema.json cannot say: bytes <= total, and a job being
    verified has downloaded the whole image. Returns (json path, message) pairs."""
    problems = []
    done, total = _count(doc.get("bytes")), _count(doc.get("total"))
    if done is not None and total is not None:
        if done > total:
            problems.append(("$.bytes", "%d bytes of %d" % (done, total)))
        elif doc.get("state") == "verifying" and done != total:
            problems.append(("$.bytes", "verifying after %d bytes of %d" % (done, total)))
    return problems


def heatmap_problems(doc):
    """What heatmap.schema.json cannot say: list lengths that must agree, window
    lengths, distinct window sizes, a closed window that has ended. Returns
    (json path, message) pairs; parts with the wrong type are left to the schema."""
    problems = []
    fields = doc.get("fields")
    nfields = len(fields) if isinstance(fields, list) else None
    merge = doc.get("merge")
    if nfields is not None and isinstance(merge, list) and len(merge) != nfields:
        problems.append(("$.merge", "%d merge rules for %d fields"
                         % (len(merge), nfields)))

    def check_cells(cells, path):
        if nfields is None or not isinstance(cells, dict):
            return
        for key, values in sorted(cells.items()):
            if isinstance(values, list) and len(values) != nfields:
                problems.append(("%s.%s" % (path, key), "%d values for %d fields"
                                 % (len(values), nfields)))

    def check_span(window, path):
        if not isinstance(window, dict):
            return
        size, start, end = (window.get(k) for k in ("size_s", "start", "end"))
        if all(isinstance(x, int) and not isinstance(x, bool)
               for x in (size, start, end)) and end - start != size * 1000:
            problems.append((path + ".end", "end - start is %d ms, size_s is %d s"
                             % (end - start, size)))

    state = doc.get("state")
    if isinstance(state, dict):
        check_cells(state.get("cells"), "$.state.cells")
    windows = doc.get("windows")
    if isinstance(windows, list):
        sizes = set()
        for i, window in enumerate(windows):
            path = "$.windows[%d]" % i
            check_span(window, path)
            if isinstance(window, dict):
                check_cells(window.get("cells"), path + ".cells")
                size = window.get("size_s")
                if isinstance(size, int) and size in sizes:
                    problems.append((path + ".size_s", "two windows of %d s" % size))
                sizes.add(size)
    window = doc.get("window")
    check_span(window, "$.window")
    if (doc.get("closed") is True and isinstance(window, dict)
            and isinstance(window.get("end"), int) and isinstance(doc.get("ts"), int)
            and window["end"] > doc["ts"]):
        problems.append(("$.window.end", "a closed window ending after ts"))
    check_cells(doc.get("cells"), "$.cells")
    return problems


def validate_files(validators, files, out):
    """Validate every message of files; print problems to out.

    Returns (valid, invalid, skipped).
    """
    valid = invalid = skipped = 0
    for fname in files:
        try:
            with open(fname, encoding="utf-8", newline="") as f:
                lines = f.read().split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError("cannot read %s: %s" % (fname, e))
        for lineno, raw in enumerate(lines, 1):
            line = raw.rstrip("\r")
            if not line.strip():
                continue
            topic, text = split_line(line)
            schema_name, ids = classify(topic)
            if schema_name is None or text.strip() in ("", EMPTY_PAYLOAD):
                skipped += 1
                continue
            try:
                payload = parse_payload(text)
            except ValueError as e:
                problems = [("$", "payload is not valid JSON: %s" % e)]
            else:
                problems = check_payload(validators, schema_name, ids, payload)
            if problems:
                invalid += 1
                path, msg = problems[0]
                for extra in problems[1:]:
                    msg += "; and %s: %s" % extra
                out.write("%s:%d: %s: %s: %s\n" % (fname, lineno, topic,
                                                   path, msg))
            else:
                valid += 1
    return valid, invalid, skipped


def main(argv):
    args = argv[1:]
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if len(args) < 2:
        sys.stderr.write(USAGE + "\n")
        return 2
    try:
        validators = make_validators(load_schemas(args[0]))
        valid, invalid, skipped = validate_files(validators, args[1:],
                                                 sys.stdout)
    except UsageError as e:
        sys.stderr.write("validate_payloads: %s\n" % e)
        return 2
    print("schema: %d valid, %d invalid, %d skipped" % (valid, invalid, skipped))
    sys.stdout.flush()
    if invalid:
        return 1
    if valid == 0:
        sys.stderr.write("validate_payloads: no message was validated\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
