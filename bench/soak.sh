#!/usr/bin/env bash
# Soak benchmark (issue 17): a district's load through sanigate and sanifleet for DURATION_S with
# the broker restarted every RESTART_EVERY_S (stopped, OUTAGE_S of silence, started again on the
# same port with its persistence file). A real mosquitto on a free loopback port; Modbus TCP rooms
# (modbus_sim --dynamic), LoRaWAN ABP bins (lora_sim through the Semtech UDP port) and JT/T 808
# trucks (jt808_sim); sanifleet with its heat map on the same broker.
# Prints, per daemon: CPU share of one core, RSS after warm-up and at the end, and the RSS slope per
# hour after WARMUP_S (least squares over the samples, in % of the mean RSS; target <= 1 %/h), and
# whether it is still running. Also what reached the broker and what the simulators counted.
# Asserts nothing; outside the default test run. Every process it starts is tracked by PID and
# stopped on exit.
# Usage: bench/soak.sh [BUILD_DIR=./build]
# Knobs (environment): DURATION_S (3600) RESTART_EVERY_S (600) OUTAGE_S (5) WARMUP_S (300)
#   SAMPLE_S (10) ROOMS (100) ROOM_INTERVAL_MS (2000) BINS (300) BIN_INTERVAL_MS (60000)
#   TRUCKS (60) TRUCK_INTERVAL_MS (10000) KEEP=1 (keep the temp dir)
#   HEATMAP_WINDOWS ("15m,1h,24h") HEATMAP_RETENTION_S (86400): sanifleet keeps heat-map windows
#   for the retention, so with the defaults its memory fills for a day by design; a shorter
#   retention (e.g. HEATMAP_WINDOWS=5m,15m HEATMAP_RETENTION_S=900) makes an hour long enough for
#   the slope after warm-up to show leaks rather than that fill.
#   GW_WRAP / FLEET_WRAP: a command to run the daemon under, e.g. "heaptrack -o /tmp/gw" (the
#   samples then follow the daemon, the wrapper's child)
set -euo pipefail
BUILD=${1:-./build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GWBIN=$BUILD/gateway/sanigate
FLEETBIN=$BUILD/fleet/sanifleet
for f in "$GWBIN" "$FLEETBIN" "$BUILD/tests/sim/modbus_sim" "$BUILD/tests/sim/lora_sim" "$BUILD/tests/sim/jt808_sim"; do
  [ -x "$f" ] || { echo "missing $f (build sanigate, sanifleet, modbus_sim, lora_sim and jt808_sim)" >&2; exit 2; }
done

DURATION_S=${DURATION_S:-3600}
RESTART_EVERY_S=${RESTART_EVERY_S:-600}
OUTAGE_S=${OUTAGE_S:-5}
WARMUP_S=${WARMUP_S:-300}
SAMPLE_S=${SAMPLE_S:-10}
ROOMS=${ROOMS:-100}
ROOM_INTERVAL_MS=${ROOM_INTERVAL_MS:-2000}
BINS=${BINS:-300}
BIN_INTERVAL_MS=${BIN_INTERVAL_MS:-60000}
TRUCKS=${TRUCKS:-60}
TRUCK_INTERVAL_MS=${TRUCK_INTERVAL_MS:-10000}
[ "$WARMUP_S" -lt "$DURATION_S" ] || { echo "WARMUP_S must be below DURATION_S" >&2; exit 2; }

RUN=$(mktemp -d /tmp/sanigate-soak.XXXXXX)
PIDS=()
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

alive() { kill -0 "$1" 2>/dev/null && echo yes || echo NO; }

# ---- mosquitto: persistence on, so sanifleet's persistent session survives the restarts ----------
MQ=$(free_port)
mkdir -p "$RUN/mq"
# Run as root, mosquitto drops to its own user: it must reach and write its persistence file.
chmod 0711 "$RUN"
chown mosquitto "$RUN/mq" 2>/dev/null || chmod 0777 "$RUN/mq"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/mq/\nsys_interval 1\nmax_queued_messages 100000\n' \
  "$MQ" "$RUN" > "$RUN/mosquitto.conf"
start_broker() {
  mosquitto -c "$RUN/mosquitto.conf" 2>> "$RUN/mosquitto.log" & MQPID=$!
  PIDS+=("$MQPID")
  wait_port "$MQ"
}
stop_broker() {
  kill -TERM "$MQPID" 2>/dev/null || true
  wait "$MQPID" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$MQPID" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
start_broker

# ---- simulators and configs -----------------------------------------------------------------------
: > "$RUN/ports"
left=$ROOMS; k=0
while [ "$left" -gt 0 ]; do  # one modbus_sim serves at most ~1000 sockets: 400 rooms each
  n=$((left > 400 ? 400 : left))
  "$BUILD/tests/sim/modbus_sim" --devices "$n" --dynamic --seed "$k" --port-file "$RUN/ports.$k" 2> /dev/null & PIDS+=($!)
  for _ in $(seq 100); do [ -s "$RUN/ports.$k" ] && break; sleep 0.1; done
  cat "$RUN/ports.$k" >> "$RUN/ports"
  left=$((left - n)); k=$((k + 1))
done
UDP=$(free_port); JT=$(free_port)
python3 - "$RUN" "$MQ" "$UDP" "$JT" "$BINS" "$ROOM_INTERVAL_MS" "$ROOT" "${HEATMAP_WINDOWS:-15m,1h,24h}" "${HEATMAP_RETENTION_S:-86400}" <<'PY'
import sys
run, mq, udp, jt, bins, room_ms, root, hm_windows, hm_retention = sys.argv[1:10]
ports = [l.strip() for l in open(f"{run}/ports") if l.strip()]
with open(f"{run}/gw.toml", "w") as f:
    f.write(f'[gateway]\nid = "gw-soak"\nsite = "soak"\ndata_dir = "{run}/gw"\nlog_level = "warn"\n\n')
    f.write(f'[mqtt]\nurl = "tcp://127.0.0.1:{mq}"\n\n')
    f.write(f'[jt808]\nlisten = "127.0.0.1:{jt}"\nunknown_terminals = "register"\ndevice_prefix = "truck-"\n\n')
    f.write(f'[lorawan]\nlisten = "127.0.0.1:{udp}"\nprofiles_dir = "{root}/config/profiles"\n')
    for i in range(int(bins)):
        f.write(f'\n[[lorawan.devices]]\nid = "bin-{i}"\ndev_eui = "{0x0102030405060000 + i:016X}"\nactivation = "abp"\n'
                f'dev_addr = "{0x26010000 + i:08X}"\nnwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C"\n'
                f'app_s_key = "000102030405060708090A0B0C0D0E0F"\nprofile = "bin-monitor-ultrasonic-v1"\n'
                f'location = {{ lat = {24.50 + (i % 30) * 0.001:.4f}, lon = {118.10 + (i // 30) * 0.001:.4f} }}\n')
    f.write('\n[modbus]\n')
    for i, p in enumerate(ports):
        f.write(f'\n[[modbus.devices]]\nid = "room-{i:04d}"\nhost = "127.0.0.1"\nport = {p}\ninterval_ms = {room_ms}\n'
                f'timeout_ms = 500\nlocation = {{ lat = {24.52 + (i % 20) * 0.001:.4f}, lon = {118.12 + (i // 20) * 0.001:.4f} }}\n')
        for metric, extra in (("fill_level_pct", 'address = 0\nscale = 0.1'), ("temperature_c", 'address = 1\ntype = "i16"\nscale = 0.1'),
                              ("nh3_ppm", 'address = 2\ntype = "f32"\ndecimals = 2'), ("h2s_ppm", 'address = 6\ntype = "f32"\ndecimals = 2')):
            f.write(f'[[modbus.devices.points]]\nmetric = "{metric}"\n{extra}\n')
with open(f"{run}/fleet.toml", "w") as f:
    f.write(f'[fleet]\nid = "fleet-soak"\nsite = "soak"\ndata_dir = "{run}/fleet"\nlog_level = "warn"\n\n')
    windows = ", ".join(f'"{w.strip()}"' for w in hm_windows.split(","))
    f.write(f'[mqtt]\nurl = "tcp://127.0.0.1:{mq}"\n\n[heatmap]\nsnapshot_interval_s = 60\n'
            f'windows = [{windows}]\nretention_s = {hm_retention}\n')
PY
"$GWBIN" --check-config "$RUN/gw.toml" > /dev/null

# The daemon itself, not a wrapper around it: a wrapper's child of that name (5 s at most).
daemon_pid() {
  local wrapper=$1 name=$2 child
  [ -z "$3" ] && { echo "$wrapper"; return; }
  for _ in $(seq 50); do
    child=$(pgrep -P "$wrapper" -x "$name" | head -1) && [ -n "$child" ] && { echo "$child"; return; }
    sleep 0.1
  done
  echo "$wrapper"
}
${GW_WRAP:-} "$GWBIN" --config "$RUN/gw.toml" 2> "$RUN/gw.log" & GW=$!; PIDS+=("$GW")
${FLEET_WRAP:-} "$FLEETBIN" --config "$RUN/fleet.toml" 2> "$RUN/fleet.log" & FLEET=$!; PIDS+=("$FLEET")
GW=$(daemon_pid "$GW" sanigate "${GW_WRAP:-}"); FLEET=$(daemon_pid "$FLEET" sanifleet "${FLEET_WRAP:-}")
PIDS+=("$GW" "$FLEET")
wait_port "$JT"
SIM_S=$DURATION_S  # they end with the run and write their stats
"$BUILD/tests/sim/lora_sim" --port "$UDP" --mode abp --devices "$BINS" --dev-eui-base 0102030405060000 \
  --dev-addr-base 26010000 --interval-ms "$BIN_INTERVAL_MS" --duration-s "$SIM_S" --quiet \
  --stats-json "$RUN/lora.json" > "$RUN/lora.out" 2>&1 & LORA=$!; PIDS+=("$LORA")
"$BUILD/tests/sim/jt808_sim" --port "$JT" --terminals "$TRUCKS" --interval-ms "$TRUCK_INTERVAL_MS" --duration-s "$SIM_S" \
  --stats-json "$RUN/jt808.json" > "$RUN/jt808.out" 2> "$RUN/jt808.err" & JTSIM=$!; PIDS+=("$JTSIM")

echo "soak: $(date -Is), $(nproc) cores, build $BUILD, ${DURATION_S} s, broker restart every ${RESTART_EVERY_S} s (${OUTAGE_S} s down)"
echo "  heat map windows ${HEATMAP_WINDOWS:-15m,1h,24h}, retention ${HEATMAP_RETENTION_S:-86400} s; MALLOC_ARENA_MAX ${MALLOC_ARENA_MAX:-unset}"
echo "  load: $ROOMS rooms every ${ROOM_INTERVAL_MS} ms (4 points), $BINS bins every ${BIN_INTERVAL_MS} ms, $TRUCKS trucks every ${TRUCK_INTERVAL_MS} ms"
HZ=$(getconf CLK_TCK)
START=$SECONDS
NEXT_RESTART=$RESTART_EVERY_S
RESTARTS=0
anon_kb() { awk '/RssAnon/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
echo "t_s gw_rss_kb fleet_rss_kb gw_ticks fleet_ticks gw_anon_kb fleet_anon_kb" > "$RUN/samples"
while [ $((SECONDS - START)) -lt "$DURATION_S" ]; do
  sleep "$SAMPLE_S"
  t=$((SECONDS - START))
  echo "$t $(rss_kb "$GW") $(rss_kb "$FLEET") $(cpu_ticks "$GW") $(cpu_ticks "$FLEET") $(anon_kb "$GW") $(anon_kb "$FLEET")" >> "$RUN/samples"
  if [ "$t" -ge "$NEXT_RESTART" ] && [ "$t" -lt "$DURATION_S" ]; then
    stop_broker
    sleep "$OUTAGE_S"
    start_broker
    RESTARTS=$((RESTARTS + 1))
    NEXT_RESTART=$((NEXT_RESTART + RESTART_EVERY_S))
  fi
done
for p in "$LORA" "$JTSIM"; do  # at most 30 s more for the simulators to finish
  for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
RECEIVED=$(timeout 5 mosquitto_sub -p "$MQ" -C 1 -W 4 -t '$SYS/broker/publish/messages/received' 2> /dev/null || echo "?")
GW_ALIVE=$(alive "$GW"); FLEET_ALIVE=$(alive "$FLEET")
SQLITE_MEM=$(timeout 5 mosquitto_sub -p "$MQ" -C 1 -W 4 -t 'sanigate/v1/soak/gateway/gw-soak/status' 2> /dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["outbox"].get("sqlite_memory_bytes", "?"))' 2> /dev/null || echo "?")
echo "  sanigate's SQLite heap at the end (status outbox.sqlite_memory_bytes): $SQLITE_MEM bytes"

python3 - "$RUN/samples" "$HZ" "$WARMUP_S" "$RESTARTS" "$GW_ALIVE" "$FLEET_ALIVE" "$RECEIVED" <<'PY'
import sys
path, hz, warm, restarts, gw_alive, fleet_alive, received = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
rows = [list(map(int, l.split())) for l in open(path).read().splitlines()[1:] if l.strip()]
after = [r for r in rows if r[0] >= warm] or rows
def slope_pct_per_h(col):
    xs = [r[0] for r in after]; ys = [r[col] for r in after]
    n = len(xs)
    if n < 3: return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0 or my == 0: return float("nan")
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var  # kB per second
    return 100.0 * b * 3600 / my
def cpu_pct(col):
    a, z = after[0], rows[-1]
    secs = z[0] - a[0]
    return 100.0 * (z[col] - a[col]) / hz / secs if secs > 0 else float("nan")
print(f"  broker restarts: {restarts}; publishes the broker received since its last start: {received}")
for name, rss, ticks, up in (("sanigate", 1, 3, gw_alive), ("sanifleet", 2, 4, fleet_alive)):
    print(f"  {name:<9} running at the end: {up}; CPU {cpu_pct(ticks):.1f} % of a core after warm-up; "
          f"RSS {after[0][rss] / 1024:.1f} MB after warm-up ({after[0][0]} s), {rows[-1][rss] / 1024:.1f} MB at the end, "
          f"peak {max(r[rss] for r in rows) / 1024:.1f} MB; slope {slope_pct_per_h(rss):+.2f} %/h (target <= 1 %/h)")
    anon = rss + 4  # anonymous (heap) part of the RSS: columns 5 and 6
    print(f"  {'':<9} anonymous RSS {after[0][anon] / 1024:.1f} MB after warm-up, {rows[-1][anon] / 1024:.1f} MB at the end; "
          f"slope {slope_pct_per_h(anon):+.2f} %/h")
PY
python3 - "$RUN/lora.json" "$RUN/jt808.json" <<'PY' || true
import json, sys
for name, path in (("lora_sim", sys.argv[1]), ("jt808_sim", sys.argv[2])):
    try:
        s = json.load(open(path))
    except Exception as e:
        print(f"  {name}: no stats ({e})"); continue
    counts = {k: v for k, v in s.items() if isinstance(v, int) and not isinstance(v, bool)}
    print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in list(counts.items())[:10]))
PY
for log in gw fleet; do  # the level is the second field of a log line
  n=$(awk '$2 == "error" || $2 == "critical"' "$RUN/$log.log" | wc -l)
  first=$(awk '$2 == "error" || $2 == "critical"' "$RUN/$log.log" | head -1 | cut -c1-160)
  echo "  $log log: $n error lines${first:+, first: $first}"
done
