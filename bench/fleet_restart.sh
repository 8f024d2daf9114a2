#!/usr/bin/env bash
# What sanifleet loses across a restart and a broker outage (issue 16): JT/T 808 trucks
# (jt808_sim) report positions every second through a real sanigate to a real mosquitto; sanifleet
# bins them into its heat map. At RESTART_AT_S sanifleet is stopped (SIGTERM) and started again
# RESTART_S later; at OUTAGE_AT_S the broker is stopped for OUTAGE_S (sanigate keeps the points in
# its outbox, sanifleet keeps its persistent session in the broker's persistence file). At the end
# every point the gateway acknowledged to a truck is compared with the points in sanifleet's
# vehicle_coverage day window (admin verb heatmap through mosquitto_rr): lost = acknowledged -
# binned. Prints figures, asserts nothing; outside the default test run.
# Usage: bench/fleet_restart.sh [BUILD_DIR=./build]
# Knobs (environment): TRUCKS (20) DURATION_S (100) RESTART_AT_S (15) RESTART_S (10)
#   OUTAGE_AT_S (45) OUTAGE_S (30) KEEP=1
set -euo pipefail
BUILD=${1:-./build}
GWBIN=$BUILD/gateway/sanigate
FLEETBIN=$BUILD/fleet/sanifleet
SIM=$BUILD/tests/sim/jt808_sim
for f in "$GWBIN" "$FLEETBIN" "$SIM"; do [ -x "$f" ] || { echo "missing $f" >&2; exit 2; }; done
TRUCKS=${TRUCKS:-20}
DURATION_S=${DURATION_S:-100}
RESTART_AT_S=${RESTART_AT_S:-15}
RESTART_S=${RESTART_S:-10}
OUTAGE_AT_S=${OUTAGE_AT_S:-45}
OUTAGE_S=${OUTAGE_S:-30}

RUN=$(mktemp -d /tmp/sanigate-fleetrestart.XXXXXX)
PIDS=()
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM
forget() { local keep=() p; for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }

MQ=$(free_port); JT=$(free_port)
mkdir -p "$RUN/mq"
# Run as root, mosquitto drops to its own user: that user must be able to write its persistence file.
chmod 0711 "$RUN"
chown mosquitto "$RUN/mq" 2>/dev/null || chmod 0777 "$RUN/mq"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/mq/\nmax_queued_messages 1000000\n' \
  "$MQ" "$RUN" > "$RUN/mosquitto.conf"
start_broker() { mosquitto -c "$RUN/mosquitto.conf" 2>> "$RUN/mosquitto.log" & MQPID=$!; PIDS+=("$MQPID"); wait_port "$MQ"; }
stop_pid_term() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; forget "$1"; }
start_fleet() { "$FLEETBIN" --config "$RUN/fleet.toml" 2>> "$RUN/fleet.log" & FLEET=$!; PIDS+=("$FLEET"); }
start_broker

printf '[gateway]\nid = "gw-bench"\nsite = "bench"\ndata_dir = "%s/gw"\nlog_level = "warn"\n[mqtt]\nurl = "tcp://127.0.0.1:%s"\n' "$RUN" "$MQ" > "$RUN/gw.toml"
printf '[jt808]\nlisten = "127.0.0.1:%s"\nunknown_terminals = "register"\ndevice_prefix = "truck-"\n' "$JT" >> "$RUN/gw.toml"
printf '[fleet]\nid = "fleet-bench"\nsite = "bench"\ndata_dir = "%s/fleet"\nlog_level = "warn"\n[mqtt]\nurl = "tcp://127.0.0.1:%s"\n' "$RUN" "$MQ" > "$RUN/fleet.toml"
"$GWBIN" --config "$RUN/gw.toml" 2> "$RUN/gw.log" & GW=$!; PIDS+=("$GW")
wait_port "$JT"
start_fleet
sleep 2
"$SIM" --port "$JT" --terminals "$TRUCKS" --interval-ms 1000 --duration-s "$DURATION_S" --stats-json "$RUN/sim.json" \
  > "$RUN/sim.out" 2> "$RUN/sim.err" & SIMPID=$!; PIDS+=("$SIMPID")
T0=$SECONDS
at() { while [ $((SECONDS - T0)) -lt "$1" ]; do sleep 0.2; done; }

echo "fleet_restart: $(date -Is), $TRUCKS trucks at 1 Hz for ${DURATION_S} s; sanifleet stopped at ${RESTART_AT_S} s for ${RESTART_S} s;" \
  "broker stopped at ${OUTAGE_AT_S} s for ${OUTAGE_S} s"
at "$RESTART_AT_S"; stop_pid_term "$FLEET"
at $((RESTART_AT_S + RESTART_S)); start_fleet
at "$OUTAGE_AT_S"; stop_pid_term "$MQPID"
at $((OUTAGE_AT_S + OUTAGE_S)); start_broker
while kill -0 "$SIMPID" 2>/dev/null; do sleep 0.5; done
sleep 15  # the outbox drains, sanifleet bins what the broker kept for it

python3 - "$RUN" "$MQ" <<'PY'
import json, subprocess, sys
run, mq = sys.argv[1], sys.argv[2]
sim = json.load(open(f"{run}/sim.json"))
acked = sim.get("acks_ok", 0)
out = subprocess.run(["mosquitto_rr", "-h", "127.0.0.1", "-p", mq, "-t", "sanigate/v1/bench/fleet/admin/heatmap",
                      "-e", "sanigate/v1/bench/admin/reply/bench", "-m", json.dumps({"layer": "vehicle_coverage", "window": 86400}),
                      "-W", "10"], capture_output=True, text=True).stdout
r = json.loads(out)["result"]
fields = r["fields"]
n_at = fields.index("n")
binned = sum(v[n_at] for v in r["cells"].values())
print(f"  points acknowledged to the trucks: {acked}; binned by sanifleet in its day window: {binned}; "
      f"lost: {acked - binned} ({100.0 * (acked - binned) / max(1, acked):.2f} %)")
PY
