#!/usr/bin/env bash
# Bytes per record sent upstream (issue 21, "a WAN that costs money"): one sanigate with three
# [[upstream]] destinations on the same city broker, side by side in one run: records one per
# publish, batches of BATCH records as JSON, the same batches deflated, and zstd. A backlog builds
# while the city broker is down (OUTAGE_S), then drains; the figures come from the gateway's own
# status (upstreams[].bytes_sent and delivered: topic + payload bytes, MQTT framing not counted).
# Real mosquitto brokers on free loopback ports and the libmodbus simulator (ROOMS rooms, 4
# points, every INTERVAL_MS). Asserts nothing; outside the default test run.
# Usage: bench/upstream_bytes.sh [BUILD_DIR=./build]   Knobs: ROOMS (50) INTERVAL_MS (500)
#   OUTAGE_S (20) BATCH (50) KEEP=1
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
ROOMS=${ROOMS:-50}; INTERVAL_MS=${INTERVAL_MS:-500}; OUTAGE_S=${OUTAGE_S:-20}; BATCH=${BATCH:-50}
RUN=$(mktemp -d /tmp/sanigate-upbytes-XXXXXX)
PIDS=()
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

LOCAL=$(free_port); CITY=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$LOCAL" > "$RUN/local.conf"
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n' "$CITY" > "$RUN/city.conf"
mosquitto -c "$RUN/local.conf" 2> "$RUN/local.log" & PIDS+=($!)
wait_port "$LOCAL"
"$BUILD/tests/sim/modbus_sim" --devices "$ROOMS" --dynamic --port-file "$RUN/ports" 2> /dev/null & PIDS+=($!)
for _ in $(seq 100); do [ -s "$RUN/ports" ] && break; sleep 0.1; done

python3 - "$RUN" "$LOCAL" "$CITY" "$INTERVAL_MS" "$BATCH" <<'PY'
import sys
run, local, city, interval, batch = sys.argv[1:6]
ports = [l.strip() for l in open(f"{run}/ports") if l.strip()]
with open(f"{run}/gw.toml", "w") as f:
    f.write(f'[gateway]\nid = "gw-bytes"\nsite = "houpu"\ndata_dir = "{run}/gw"\nlog_level = "warn"\nstatus_interval_s = 1\n\n')
    f.write(f'[mqtt]\nurl = "tcp://127.0.0.1:{local}"\n\n')
    for name, extra in (("single", ""), ("json", f"batch_max_records = {batch}\n"),
                        ("deflate", f'batch_max_records = {batch}\ncompression = "deflate"\n'),
                        ("zstd", f'batch_max_records = {batch}\ncompression = "zstd"\n')):
        f.write(f'[[upstream]]\nname = "{name}"\nurl = "tcp://127.0.0.1:{city}"\nclient_id = "gw-bytes-{name}"\n'
                f'topic_prefix = "city/{name}"\nkinds = ["telemetry", "event", "status"]\nreconnect_max_ms = 1000\n{extra}\n')
    f.write('[modbus]\n')
    for i, p in enumerate(ports):
        f.write(f'\n[[modbus.devices]]\nid = "room-{i:03d}"\nhost = "127.0.0.1"\nport = {p}\ninterval_ms = {interval}\n'
                f'location = {{ lat = 24.52, lon = 118.12 }}\n')
        for metric, extra in (("fill_level_pct", 'address = 0\nscale = 0.1'), ("temperature_c", 'address = 1\ntype = "i16"\nscale = 0.1'),
                              ("nh3_ppm", 'address = 2\ntype = "f32"\ndecimals = 2'), ("h2s_ppm", 'address = 6\ntype = "f32"\ndecimals = 2')):
            f.write(f'[[modbus.devices.points]]\nmetric = "{metric}"\n{extra}\n')
PY
"$BUILD/gateway/sanigate" --config "$RUN/gw.toml" 2> "$RUN/gw.log" & GW=$!; PIDS+=("$GW")
echo "upstream_bytes: $ROOMS rooms every $INTERVAL_MS ms, city broker down for $OUTAGE_S s, batches of $BATCH"
sleep "$OUTAGE_S"
mosquitto -c "$RUN/city.conf" 2> "$RUN/city.log" & PIDS+=($!)
wait_port "$CITY"
# Drained when no destination is owed anything for a moment (the load goes on meanwhile).
status() { timeout 5 mosquitto_sub -p "$LOCAL" -t "sanigate/v1/houpu/gateway/gw-bytes/status" -C 1 -W 4 2> /dev/null || true; }
for _ in $(seq 120); do
  sleep 1
  s=$(status)
  [ -n "$s" ] && python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if all(u["pending"] < 50 for u in s["upstreams"]) else 1)' "$s" && break
done
kill -STOP "$GW"; s=$(status); kill -CONT "$GW"
python3 - "$s" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
base = None
print(f'  {"destination":<12} {"records":>8} {"bytes":>10} {"bytes/record":>13} {"vs single":>9}')
for u in s["upstreams"]:
    per = u["bytes_sent"] / max(1, u["delivered"])
    base = base or per
    print(f'  {u["name"]:<12} {u["delivered"]:>8} {u["bytes_sent"]:>10} {per:>13.1f} {per / base:>9.2f}')
PY
