#!/usr/bin/env bash
# sanigate's [[upstream]] against the classic Mosquitto bridge (issue 21), side by side in one
# run, the same device load and the same faults applied to both at the same moment:
#   A  sanigate with an [[upstream]] destination to a "city" Mosquitto (it also publishes to the
#      box's local Mosquitto, as always);
#   B  sanigate publishing only to the box's local Mosquitto, which bridges `sanigate/v1/#` to an
#      identical city Mosquitto (`topic sanigate/v1/# out 1`, `cleansession false`, queue
#      settings at Mosquitto's defaults, i.e. max_queued_messages 1000, autosave_interval 1800).
# Each city broker runs in a network namespace of its own behind a veth pair (10.232.X.0/30 and
# 10.232.X.4/30, X picked free); the boxes (sanigate, the local brokers, the Modbus simulators)
# stay in the root namespace. Gateways gw-a and gw-b have the same id length, topics are not
# remapped, so records are the same size on both links.
# Timeline (S = SHORT_S, P = PARTITION_S, G = SETTLE_S; every fault on both setups at once):
#   warm-up; silent partition of S (`ip link set city0 down` inside the namespace: packets
#   vanish, nothing closes a connection); G; refused outage of S (both city brokers stopped,
#   restarted on the same port with their persistence, REFUSED=1); G; silent partition of S with
#   a kill -9 of both local Mosquittos at S/3 (restarted 2 s later with their persistence file)
#   and a kill -9 of both sanigates at 2S/3 (restarted at once); G; a silent partition of P, then
#   the catch-up is watched; G; `mosquitto_pub -q 1 -l` of PUB_N lines over each link; the
#   simulators stop and both setups drain.
# Prints per setup: records produced (the gateway's own record ids: outbox sequence numbers are
# consecutive, so produced = the seq range seen), delivered to the city (unique ids, from a
# persistent mosquitto_sub inside the city's namespace), lost, duplicates the city's subscriber
# saw, per-device order violations (telemetry, first arrivals), what the local broker's own
# subscriber got, bytes on the city link per delivered record (/sys/class/net/<veth>/statistics,
# tx + rx, Ethernet/IP/TCP/MQTT included, the mosquitto_pub run excluded), and for the long
# partition: records backlogged, catch-up time (link up to the last of them delivered), the
# drain rate (those records / time from their first to their last arrival after link up) and its
# ratio to mosquitto_pub's rate over the same link (goal >= 0.8), with the CPU share of the
# sender and of the city broker in both windows (sampled every 0.2 s from /proc). Rates and CPU
# shares depend on what else the machine runs: note the load average printed at both ends.
# Asserts nothing; outside the default test run. Needs root (ip netns). Every process it starts
# is tracked by PID and stopped on exit; the namespaces and veths it made are deleted.
# Usage: bench/upstream_bridge.sh [BUILD_DIR=./build]
# Knobs (environment; QUICK=1 gives the values in brackets, about 3-4 minutes in all):
#   ROOMS (50) INTERVAL_MS (500): Modbus rooms per setup, each with a read counter
#   PARTITION_S (300 [30])  the long silent partition
#   SHORT_S (60 [20])       the other partitions and the refused outage
#   SETTLE_S (30 [10])      between faults      WARMUP_S (20 [10])
#   KEEPALIVE_S (30 [5])    sanigate's upstream keepalive_s and the bridge's keepalive_interval
#                           (sanigate's default; the bridge's default is 60)
#   REFUSED (1)             0 skips the refused outage
#   CATCHUP_MAX_S (300 [120]) longest wait for the catch-up; FINAL_MAX_S (180 [90]) final drain
#   PUB_N (20000 [10000])   lines for mosquitto_pub -q 1 -l over each link
#   LOCAL_EXTRA, BRIDGE_EXTRA  extra lines for both local mosquitto.conf / B's bridge section,
#                           e.g. a tuned bridge: LOCAL_EXTRA=$'max_queued_messages 0\nautosave_interval 1'
#                           (0 = no queue limit; the queue is global, not per bridge, in 2.0)
#   CITY_EXTRA              extra lines for both city mosquitto.conf, e.g. 'set_tcp_nodelay true'
#                           (off by default, as in Mosquitto; the test harness's brokers set it)
#   GW_EXTRA                TOML appended to both sanigate configs, e.g.
#                           GW_EXTRA=$'[outbox]\nsynchronous = "normal"\ncommit_linger_ms = 0'
#   KEEP=1 keeps the temp dir (logs, captures)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
GWBIN=$BUILD/gateway/sanigate
SIMBIN=$BUILD/tests/sim/modbus_sim
for f in "$GWBIN" "$SIMBIN"; do [ -x "$f" ] || { echo "missing $f (build sanigate and modbus_sim)" >&2; exit 2; }; done
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns)" >&2; exit 2; }
for t in ip mosquitto mosquitto_sub mosquitto_pub curl python3; do
  command -v "$t" > /dev/null || { echo "missing $t" >&2; exit 2; }
done

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then q() { echo "$1"; }; else q() { echo "$2"; }; fi
ROOMS=${ROOMS:-50}
INTERVAL_MS=${INTERVAL_MS:-500}
PARTITION_S=${PARTITION_S:-$(q 30 300)}
SHORT_S=${SHORT_S:-$(q 20 60)}
SETTLE_S=${SETTLE_S:-$(q 10 30)}
WARMUP_S=${WARMUP_S:-$(q 10 20)}
KEEPALIVE_S=${KEEPALIVE_S:-$(q 5 30)}
REFUSED=${REFUSED:-1}
CATCHUP_MAX_S=${CATCHUP_MAX_S:-$(q 120 300)}
FINAL_MAX_S=${FINAL_MAX_S:-$(q 90 180)}
PUB_N=${PUB_N:-$(q 10000 20000)}
LOCAL_EXTRA=${LOCAL_EXTRA:-}
BRIDGE_EXTRA=${BRIDGE_EXTRA:-}
CITY_EXTRA=${CITY_EXTRA:-}

RUN=$(mktemp -d /tmp/sanigate-upbridge-XXXXXX)
PIDS=()
source "$(dirname "$0")/lib.sh"
SETUPS=(a b)
declare -A NS VETH HOSTIP NSIP MADE_NS MADE_VETH GW LOCAL CITY LPORT MPORT
finish() {
  cleanup
  local s
  for s in "${SETUPS[@]}"; do
    if [ "${MADE_VETH[$s]:-0}" = 1 ]; then ip link del "${VETH[$s]}" 2> /dev/null || true; fi
    if [ "${MADE_NS[$s]:-0}" = 1 ]; then ip netns del "${NS[$s]}" 2> /dev/null || true; fi
  done
}
trap finish EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
T0=$(now)
event() {
  local t; t=$(now)
  echo "$1 $t" >> "$RUN/events"
  awk -v t="$t" -v t0="$T0" -v what="$1" 'BEGIN {printf "  [%6.1f s] %s\n", t - t0, what}'
}
forget() {  # a process this script stopped: never signal its PID again
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
stop_pid() {  # $1 pid, $2 signal
  kill "-$2" "$1" 2> /dev/null || true
  wait "$1" 2> /dev/null || true
  forget "$1"
}
ns_wait_port() {  # $1 namespace, $2 port: a listener on the namespace's loopback
  local i
  for ((i = 0; i < 100; i++)); do
    ip netns exec "$1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2> /dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1:$2" >&2
  return 1
}

# ---- namespaces: a free 10.232.X.0/29 split into two /30s --------------------------------------
X=""
for ((i = 0; i < 200; i++)); do
  c=$(((($$ % 200) + i) % 200 + 20))
  if ! ip -4 -o addr show | grep -q " 10\.232\.$c\." && ! ip -4 route show | grep -q "^10\.232\.$c\."; then X=$c; break; fi
done
[ -n "$X" ] || { echo "no free 10.232.X.0/29" >&2; exit 2; }
k=0
for s in "${SETUPS[@]}"; do
  NS[$s]="sgbr-$$-$s"
  VETH[$s]="sgbr${s}$$"
  HOSTIP[$s]="10.232.$X.$((k * 4 + 1))"
  NSIP[$s]="10.232.$X.$((k * 4 + 2))"
  hmac=$(printf '02:53:42:%02x:%02x:01' "$X" "$k")
  nmac=$(printf '02:53:42:%02x:%02x:02' "$X" "$k")
  ip netns add "${NS[$s]}"; MADE_NS[$s]=1
  ip link add "${VETH[$s]}" address "$hmac" type veth peer name city0 address "$nmac" netns "${NS[$s]}"; MADE_VETH[$s]=1
  ip addr add "${HOSTIP[$s]}/30" dev "${VETH[$s]}"
  ip -n "${NS[$s]}" addr add "${NSIP[$s]}/30" dev city0
  ip link set "${VETH[$s]}" up
  ip -n "${NS[$s]}" link set city0 up
  ip -n "${NS[$s]}" link set lo up
  echo "$hmac $nmac" > "$RUN/macs-$s"
  k=$((k + 1))
done
# Static neighbours: without them ARP fails during a partition and a connect gets "no route to
# host" instead of silence. Taking a link down flushes them, so heal() sets them again.
neighbours() {
  local s=$1 hmac nmac
  read -r hmac nmac < "$RUN/macs-$s"
  ip neigh replace "${NSIP[$s]}" lladdr "$nmac" dev "${VETH[$s]}" nud permanent
  ip -n "${NS[$s]}" neigh replace "${HOSTIP[$s]}" lladdr "$hmac" dev city0 nud permanent
}
for s in "${SETUPS[@]}"; do neighbours "$s"; done
partition() { local s; for s in "${SETUPS[@]}"; do ip -n "${NS[$s]}" link set city0 down; done; event "$1"; }
heal() {
  local s
  for s in "${SETUPS[@]}"; do ip -n "${NS[$s]}" link set city0 up; neighbours "$s"; done
  event "$1"
}

# ---- brokers ------------------------------------------------------------------------------------
for s in "${SETUPS[@]}"; do
  mkdir -p "$RUN/city-$s" "$RUN/local-$s"
  cat > "$RUN/city-$s/mosquitto.conf" << EOF
per_listener_settings false
allow_anonymous true
user root
persistence true
persistence_location $RUN/city-$s/
max_queued_messages 1000000
log_dest file $RUN/city-$s/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
listener 1883 ${NSIP[$s]}
listener 1883 127.0.0.1
$CITY_EXTRA
EOF
  LPORT[$s]=$(free_port); MPORT[$s]=$(free_port)
  cat > "$RUN/local-$s/mosquitto.conf" << EOF
listener ${LPORT[$s]} 127.0.0.1
allow_anonymous true
user root
persistence true
persistence_location $RUN/local-$s/
log_dest file $RUN/local-$s/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
log_timestamp_format %Y-%m-%dT%H:%M:%S
$LOCAL_EXTRA
EOF
done
cat >> "$RUN/local-b/mosquitto.conf" << EOF
connection city
address ${NSIP[b]}:1883
topic sanigate/v1/# out 1
cleansession false
remote_clientid sanigate-gw-b
keepalive_interval $KEEPALIVE_S
$BRIDGE_EXTRA
EOF

start_city() {
  ip netns exec "${NS[$1]}" mosquitto -c "$RUN/city-$1/mosquitto.conf" 2>> "$RUN/city-$1/stderr" &
  CITY[$1]=$!; PIDS+=("${CITY[$1]}")
}
start_local() {
  mosquitto -c "$RUN/local-$1/mosquitto.conf" 2>> "$RUN/local-$1/stderr" &
  LOCAL[$1]=$!; PIDS+=("${LOCAL[$1]}")
}
start_gw() {
  "$GWBIN" --config "$RUN/gw-$1.toml" 2>> "$RUN/gw-$1.log" &
  GW[$1]=$!; PIDS+=("${GW[$1]}")
}
for s in "${SETUPS[@]}"; do start_city "$s"; start_local "$s"; done
for s in "${SETUPS[@]}"; do ns_wait_port "${NS[$s]}" 1883; wait_port "${LPORT[$s]}"; done

# Captures: persistent sessions at QoS 1, one per broker; the city's runs inside its namespace on
# its loopback, so partitions never touch it. A sink for the mosquitto_pub run, too.
for s in "${SETUPS[@]}"; do
  ip netns exec "${NS[$s]}" mosquitto_sub -h 127.0.0.1 -p 1883 -i city-capture -c -q 1 -t 'sanigate/#' \
    -F '%U %t %p' > "$RUN/city-$s.txt" 2> "$RUN/city-$s.capture.err" & PIDS+=($!)
  ip netns exec "${NS[$s]}" mosquitto_sub -h 127.0.0.1 -p 1883 -i pub-sink -q 1 -t 'benchpub/#' \
    -F '%U %t' > "$RUN/sink-$s.txt" 2> "$RUN/sink-$s.err" & PIDS+=($!)
  mosquitto_sub -p "${LPORT[$s]}" -i local-capture -c -q 1 -t 'sanigate/#' \
    -F '%U %t %p' > "$RUN/local-$s.txt" 2> "$RUN/local-$s.capture.err" & PIDS+=($!)
done
subscribed() {  # $1 file, $2 publish command...: probes until the capture got one
  local f=$1 i; shift
  for ((i = 0; i < 50; i++)); do
    "$@" > /dev/null 2>&1 || true
    grep -q 'probe' "$f" 2> /dev/null && return 0
    sleep 0.2
  done
  echo "capture $f never subscribed" >&2; return 1
}
for s in "${SETUPS[@]}"; do
  subscribed "$RUN/city-$s.txt" ip netns exec "${NS[$s]}" mosquitto_pub -h 127.0.0.1 -p 1883 -t sanigate/probe -m probe
  subscribed "$RUN/sink-$s.txt" ip netns exec "${NS[$s]}" mosquitto_pub -h 127.0.0.1 -p 1883 -t benchpub/probe -m probe
  subscribed "$RUN/local-$s.txt" mosquitto_pub -p "${LPORT[$s]}" -t sanigate/probe -m probe
done

# ---- device load and gateways -------------------------------------------------------------------
for s in "${SETUPS[@]}"; do
  "$SIMBIN" --devices "$ROOMS" --dynamic --seed 42 --counter hr:4 --port-file "$RUN/ports-$s" 2> "$RUN/sim-$s.err" &
  eval "SIM_$s=\$!"; PIDS+=($!)
done
for s in "${SETUPS[@]}"; do for _ in $(seq 100); do [ -s "$RUN/ports-$s" ] && break; sleep 0.1; done; done
python3 - "$RUN" "$INTERVAL_MS" "$KEEPALIVE_S" "${LPORT[a]}" "${MPORT[a]}" "${NSIP[a]}" "${LPORT[b]}" "${MPORT[b]}" << 'PY'
import os, sys
run, interval, keepalive, lport_a, mport_a, nsip_a, lport_b, mport_b = sys.argv[1:9]
timeout = min(int(interval) - 10, 300)
for s, lport, mport in (("a", lport_a, mport_a), ("b", lport_b, mport_b)):
    ports = [l.strip() for l in open(f"{run}/ports-{s}") if l.strip()]
    with open(f"{run}/gw-{s}.toml", "w") as f:
        f.write(f'[gateway]\nid = "gw-{s}"\nsite = "houpu"\ndata_dir = "{run}/gw-{s}"\nlog_level = "info"\n\n')
        f.write(f'[mqtt]\nurl = "tcp://127.0.0.1:{lport}"\n\n')
        f.write(f'[metrics]\nlisten = "127.0.0.1:{mport}"\nper_device = false\n\n')
        if s == "a":  # every default but the keep-alive; topics not remapped (as through the bridge)
            f.write(f'[[upstream]]\nname = "city"\nurl = "tcp://{nsip_a}:1883"\nkeepalive_s = {keepalive}\n\n')
        f.write('[modbus]\n')
        for i, p in enumerate(ports):
            f.write(f'\n[[modbus.devices]]\nid = "room-{i:03d}"\nhost = "127.0.0.1"\nport = {p}\ninterval_ms = {interval}\n'
                    f'timeout_ms = {timeout}\nlocation = {{ lat = {24.52 + (i % 20) * 0.001:.4f}, lon = {118.12 + (i // 20) * 0.001:.4f} }}\n')
            for metric, extra in (("fill_level_pct", 'address = 0\nscale = 0.1'), ("temperature_c", 'address = 1\ntype = "i16"\nscale = 0.1'),
                                  ("nh3_ppm", 'address = 2\ntype = "f32"\ndecimals = 2'), ("reads", 'address = 4\ntype = "u32"')):
                f.write(f'[[modbus.devices.points]]\nmetric = "{metric}"\n{extra}\n')
        f.write("\n" + os.environ.get("GW_EXTRA", "") + "\n")
PY
for s in "${SETUPS[@]}"; do "$GWBIN" --check-config "$RUN/gw-$s.toml" > /dev/null; done

bytes_snapshot() {  # $1 label: host-side veth counters of both links
  local line="$1" s
  for s in "${SETUPS[@]}"; do
    line+=" $(cat "/sys/class/net/${VETH[$s]}/statistics/tx_bytes") $(cat "/sys/class/net/${VETH[$s]}/statistics/rx_bytes")"
  done
  echo "$line" >> "$RUN/bytes"
}

echo "upstream_bridge: $(date -Is), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), build $BUILD"
echo "  load per setup: $ROOMS rooms every $INTERVAL_MS ms (~$((ROOMS * 1000 / INTERVAL_MS)) records/s);" \
  "partitions ${SHORT_S} s, the long one ${PARTITION_S} s; keep-alive ${KEEPALIVE_S} s (both); QUICK=$QUICK"
echo "  A: sanigate [[upstream]] -> ${NSIP[a]} (${NS[a]}, ${VETH[a]});  B: local Mosquitto bridge -> ${NSIP[b]} (${NS[b]}, ${VETH[b]})"
bytes_snapshot start
for s in "${SETUPS[@]}"; do start_gw "$s"; done
event "gateways started"
sleep "$WARMUP_S"

# ---- faults ----------------------------------------------------------------------------------------
partition "silent partition 1"
sleep "$SHORT_S"
heal "healed 1"
sleep "$SETTLE_S"

if [ "$REFUSED" = 1 ]; then
  for s in "${SETUPS[@]}"; do stop_pid "${CITY[$s]}" TERM; done
  event "city brokers stopped (refused outage)"
  sleep "$SHORT_S"
  for s in "${SETUPS[@]}"; do start_city "$s"; done
  for s in "${SETUPS[@]}"; do ns_wait_port "${NS[$s]}" 1883; done
  event "city brokers restarted"
  sleep "$SETTLE_S"
fi

partition "silent partition 2"
sleep $((SHORT_S / 3))
for s in "${SETUPS[@]}"; do stop_pid "${LOCAL[$s]}" KILL; done
event "kill -9 of both local Mosquittos"
sleep 2
for s in "${SETUPS[@]}"; do start_local "$s"; done
for s in "${SETUPS[@]}"; do wait_port "${LPORT[$s]}"; done
event "local Mosquittos restarted"
sleep $((SHORT_S / 3 - 2 > 0 ? SHORT_S / 3 - 2 : 0))
for s in "${SETUPS[@]}"; do stop_pid "${GW[$s]}" KILL; done
for s in "${SETUPS[@]}"; do start_gw "$s"; done
event "kill -9 of both sanigates, restarted"
sleep $((SHORT_S - 2 * (SHORT_S / 3)))
heal "healed 2"
sleep "$SETTLE_S"

partition "long partition"
sleep "$PARTITION_S"
# CPU of the processes that drain (sanigate A and its city broker; B's local broker, which runs
# the bridge, and its city broker), every 0.2 s from just before link up until the catch-up ends.
sample_cpu() {
  local i
  for ((i = 0; i < (CATCHUP_MAX_S + 10) * 5; i++)); do
    echo "$(now) $(cpu_ticks "${GW[a]}") $(cpu_ticks "${CITY[a]}") $(cpu_ticks "${LOCAL[b]}") $(cpu_ticks "${CITY[b]}")"
    sleep 0.2
  done
}
sample_cpu > "$RUN/cpu" & SAMPLER=$!; PIDS+=("$SAMPLER")
sleep 0.5
heal "long partition healed"
HEAL_MS=$(python3 -c "print(int(float('$(tail -1 "$RUN/events" | awk '{print $NF}')') * 1000))")
# Caught up when a telemetry reading taken 2 s after link up has arrived (within a priority,
# both deliver oldest first); the exact figures come from the captures afterwards.
caught_up() {
  python3 - "$1" "$HEAL_MS" << 'PY'
import json, os, sys
path, heal = sys.argv[1], int(sys.argv[2])
with open(path, "rb") as f:
    f.seek(max(0, os.path.getsize(path) - 65536))
    lines = f.read().decode(errors="replace").splitlines()[1:]
for l in lines:
    parts = l.split(" ", 2)
    if len(parts) == 3 and parts[1].endswith("/telemetry"):
        try:
            if json.loads(parts[2]).get("ts", 0) >= heal + 2000: sys.exit(0)
        except ValueError:
            pass
sys.exit(1)
PY
}
declare -A DONE
for ((i = 0; i < CATCHUP_MAX_S; i++)); do
  sleep 1
  for s in "${SETUPS[@]}"; do
    if [ -z "${DONE[$s]:-}" ] && caught_up "$RUN/city-$s.txt"; then DONE[$s]=1; event "setup $s caught up (watcher)"; fi
  done
  [ -n "${DONE[a]:-}" ] && [ -n "${DONE[b]:-}" ] && break
done
sleep 1
stop_pid "$SAMPLER" TERM
sleep "$SETTLE_S"

# ---- mosquitto_pub -q 1 -l over each link, the load still running --------------------------------
SAMPLE=$(grep -m1 '/telemetry ' "$RUN/city-a.txt" | cut -d' ' -f3-)
python3 - "$RUN/pub.lines" "$PUB_N" "$SAMPLE" << 'PY'
import sys
path, n, sample = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    for i in range(n):
        f.write(sample.replace('"id":"gw-a:', f'"id":"pub:{i}-', 1) + "\n")
PY
bytes_snapshot pub_start
for s in "${SETUPS[@]}"; do
  before=$(wc -l < "$RUN/sink-$s.txt")
  c0=$(cpu_ticks "${CITY[$s]}")
  t0=$(now)
  TIMEFORMAT='%U %S'  # mosquitto_pub's own CPU seconds
  { time timeout 300 mosquitto_pub -h "${NSIP[$s]}" -p 1883 -i "pubbench-$s" -q 1 -t "benchpub/v1/houpu/devices/room-000/telemetry" \
    -l < "$RUN/pub.lines" 2> "$RUN/pub-$s.err"; } 2> "$RUN/pubtime-$s" || echo "  mosquitto_pub to $s failed: $(head -c 200 "$RUN/pub-$s.err")"
  t1=$(now)
  for _ in $(seq 100); do [ "$(wc -l < "$RUN/sink-$s.txt")" -ge $((before + PUB_N)) ] && break; sleep 0.1; done
  c1=$(cpu_ticks "${CITY[$s]}")
  got=$(($(wc -l < "$RUN/sink-$s.txt") - before))
  echo "$s $PUB_N $t0 $t1 $(tail -1 "$RUN/sink-$s.txt" | cut -d' ' -f1) $got $(awk '{print $1 + $2}' "$RUN/pubtime-$s") $((c1 - c0))" >> "$RUN/pubbench"
  event "mosquitto_pub of $PUB_N lines over link $s"
done
bytes_snapshot pub_end

# ---- the load stops; both setups drain -------------------------------------------------------------
stop_pid "$SIM_a" TERM; stop_pid "$SIM_b" TERM
event "simulators stopped"
metric() {  # $1 setup, $2 metric name (and labels): its value, or "?"
  curl -s --max-time 3 "http://127.0.0.1:${MPORT[$1]}/metrics" | awk -v m="$2" '$1 == m {print $2; f=1} END {if (!f) print "?"}'
}
sizes() { stat -c %s "$RUN/city-a.txt" "$RUN/city-b.txt" "$RUN/local-a.txt" "$RUN/local-b.txt" | tr '\n' ' '; }
last=""; quiet=0
for ((i = 0; i < FINAL_MAX_S; i++)); do
  sleep 1
  cur=$(sizes)
  if [ "$cur" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0; fi
  last=$cur
  pa=$(metric a sanigate_outbox_pending_records); pu=$(metric a 'sanigate_upstream_pending_records{upstream="city"}')
  pb=$(metric b sanigate_outbox_pending_records)
  [ "$pa" = 0 ] && [ "$pu" = 0 ] && [ "$pb" = 0 ] && [ "$quiet" -ge 5 ] && break
done
event "drained (outbox pending a=$pa upstream a=$pu b=$pb)"
bytes_snapshot end
for s in "${SETUPS[@]}"; do
  echo "$s $(metric "$s" 'sanigate_upstream_reconnects_total{upstream="city"}') $(metric "$s" 'sanigate_upstream_sent_bytes_total{upstream="city"}') $(metric "$s" 'sanigate_upstream_delivered_records_total{upstream="city"}')" >> "$RUN/gwmetrics"
done
for s in "${SETUPS[@]}"; do stop_pid "${GW[$s]}" TERM; done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- figures -----------------------------------------------------------------------------------------
python3 - "$RUN" "$LOAD_END" "$(getconf CLK_TCK)" << 'PY'
import json, sys, collections
run, load_end, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
cpu = [list(map(float, l.split())) for l in open(f"{run}/cpu") if len(l.split()) == 5]
def cpu_pct(col, a, b):
    """% of a core used by sample column col between times a and b (linear interpolation)."""
    def at(t):
        for (t0, *v0), (t1, *v1) in zip(cpu, cpu[1:]):
            if t0 <= t <= t1:
                return v0[col] + (v1[col] - v0[col]) * (t - t0) / max(1e-9, t1 - t0)
        return None
    x, y = at(a), at(b)
    return float("nan") if x is None or y is None or b <= a else 100.0 * (y - x) / hz / (b - a)
events = []
for l in open(f"{run}/events"):
    name, t = l.rsplit(" ", 1)
    events.append((name, float(t)))
ev = dict(events)
part0, heal = ev["long partition"], ev["long partition healed"]

def read_capture(path):
    """(arrival, topic, id seq, device, ts_ms) for every record with an id on a devices/ topic."""
    out = []
    for l in open(path, errors="replace"):
        p = l.rstrip("\n").split(" ", 2)
        if len(p) < 3 or "/devices/" not in p[1]:
            continue
        try:
            j = json.loads(p[2])
            gw, seq = j["id"].rsplit(":", 1)
            out.append((float(p[0]), p[1], int(seq), j.get("device", ""), j.get("ts", 0)))
        except (ValueError, KeyError, AttributeError):
            continue
    return out

bytes_rows = {}
for l in open(f"{run}/bytes"):
    f = l.split(); bytes_rows[f[0]] = list(map(int, f[1:]))
pub = {}
for l in open(f"{run}/pubbench"):
    f = l.split()
    if len(f) == 8:
        pub[f[0]] = (int(f[1]), float(f[2]), float(f[3]), float(f[4]), int(f[5]), float(f[6]), int(f[7]))
gwm = {}
for l in open(f"{run}/gwmetrics"):
    f = l.split(); gwm[f[0]] = f[1:]

res = {}
for k, s in enumerate(("a", "b")):
    city, local = read_capture(f"{run}/city-{s}.txt"), read_capture(f"{run}/local-{s}.txt")
    c_seqs = {r[2] for r in city}
    l_seqs = {r[2] for r in local}
    every = c_seqs | l_seqs
    lo, hi = min(every), max(every)
    kind = {}
    ts_of = {}
    for r in local + city:
        kind[r[2]] = r[1].rsplit("/", 1)[1]
        ts_of[r[2]] = r[4]
    first = {}
    for r in city:
        first.setdefault(r[2], r)
    produced = hi - lo + 1
    lost = set(range(lo, hi + 1)) - c_seqs
    lost_seen_locally = lost & l_seqs
    # per-device order of telemetry, first arrivals
    viol = 0
    last_seq = {}
    for r in sorted(first.values()):
        if not r[1].endswith("/telemetry"):
            continue
        if r[3] in last_seq and r[2] < last_seq[r[3]]:
            viol += 1
        last_seq[r[3]] = max(r[2], last_seq.get(r[3], 0))
    # the long partition: records measured before link up that arrived after it
    heal_ms = heal * 1000
    part_produced = [q for q in range(lo, hi + 1) if q in ts_of and part0 * 1000 <= ts_of[q] < heal_ms]
    backlog = sorted(r[0] for r in first.values() if r[4] < heal_ms and r[0] > heal)
    # lost records by the time they were measured (runs of consecutive lost seqs), relative to T0
    windows = []
    for q in sorted(lost):
        t = ts_of.get(q)
        if windows and q == windows[-1][1] + 1:
            windows[-1][1] = q
            if t: windows[-1][3] = t
        else:
            windows.append([q, q, t, t])
    b = bytes_rows
    i = 2 * k
    link = sum(b["pub_start"][i:i + 2]) - sum(b["start"][i:i + 2]) + sum(b["end"][i:i + 2]) - sum(b["pub_end"][i:i + 2])
    res[s] = dict(
        produced=produced, telemetry=sum(1 for q in every if kind.get(q) == "telemetry"),
        delivered=len(c_seqs), lost=len(lost), lost_tele=sum(1 for q in lost if kind.get(q) == "telemetry"),
        lost_local=len(lost_seen_locally), lost_nowhere=len(lost - l_seqs),
        dups=len(city) - len(c_seqs), viol=viol, local=len(l_seqs), local_lost=produced - len(l_seqs),
        link=link, per_rec=link / max(1, len(c_seqs)),
        part_produced=len(part_produced), part_delivered=sum(1 for q in part_produced if q in c_seqs),
        backlog=len(backlog), catchup=(backlog[-1] - heal) if backlog else float("nan"),
        windows=windows, first_after=(backlog[0] - heal) if backlog else float("nan"),
        drain=(len(backlog) - 1) / (backlog[-1] - backlog[0]) if len(backlog) > 1 and backlog[-1] > backlog[0] else float("nan"),
        drain_cpu=cpu_pct(0 if s == "a" else 2, backlog[0], backlog[-1]) if len(backlog) > 1 else float("nan"),
        drain_city_cpu=cpu_pct(1 if s == "a" else 3, backlog[0], backlog[-1]) if len(backlog) > 1 else float("nan"))
    if s in pub:
        n, t0, t1, tlast, got, pub_cpu_s, city_ticks = pub[s]
        res[s]["pub_rate"] = got / max(1e-9, tlast - t0)
        res[s]["pub_cpu"] = 100.0 * pub_cpu_s / max(1e-9, t1 - t0)
        res[s]["pub_city_cpu"] = 100.0 * city_ticks / hz / max(1e-9, tlast - t0)
        res[s]["pub_wall"] = t1 - t0
        res[s]["pub_got"] = got
        res[s]["pub_n"] = n

A, B = res["a"], res["b"]
def row(label, key, fmt="{:,}"):
    va, vb = A.get(key, float("nan")), B.get(key, float("nan"))
    f = lambda v: fmt.format(v) if v == v else "n/a"
    print(f"  {label:<58} {f(va):>16} {f(vb):>16}")
print(f"\n  {'':<58} {'A: [[upstream]]':>16} {'B: bridge':>16}")
row("records produced (gateway record ids: seq range)", "produced")
row("  of them telemetry (seen anywhere)", "telemetry")
row("delivered to the city (unique ids)", "delivered")
row("lost", "lost")
row("  of them telemetry", "lost_tele")
row("  of them seen by the local broker's subscriber", "lost_local")
row("  of them seen nowhere (lost inside the box)", "lost_nowhere")
row("duplicates seen by the city's subscriber", "dups")
row("per-device order violations (telemetry, first arrivals)", "viol")
row("unique ids the local broker's subscriber got", "local")
row("  missing there", "local_lost")
row("bytes on the city link (tx+rx, pub run excluded)", "link")
row("  per delivered record", "per_rec", "{:,.1f}")
print(f"  long partition ({heal - part0:.0f} s):")
row("  records measured during it", "part_produced")
row("    delivered", "part_delivered")
row("  backlog delivered after link up (measured before)", "backlog")
row("  first of it after link up, s", "first_after", "{:.1f}")
row("  catch-up: link up to the last of it, s", "catchup", "{:.1f}")
row("  drain rate, records/s (first to last of it)", "drain", "{:,.0f}")
row("    CPU of the sender (A: sanigate, B: local Mosquitto), %", "drain_cpu", "{:.0f}")
row("    CPU of the city broker meanwhile, %", "drain_city_cpu", "{:.0f}")
row("mosquitto_pub -q 1 -l over the same link, msgs/s", "pub_rate", "{:,.0f}")
row("  CPU of mosquitto_pub, %", "pub_cpu", "{:.0f}")
row("  CPU of the city broker meanwhile, %", "pub_city_cpu", "{:.0f}")
row("  lines sent / received by the sink", "pub_got")
for s, v in res.items():
    v["ratio"] = v["drain"] / v["pub_rate"] if v.get("pub_rate") else float("nan")
row("drain rate / mosquitto_pub rate (goal >= 0.8)", "ratio", "{:.2f}")
for s in ("a",):
    if s in gwm:
        print(f"  A's sanigate since its restart: upstream reconnects {gwm[s][0]}, sent bytes (topic+payload) {gwm[s][1]}, delivered {gwm[s][2]}")
t0 = events[0][1] - 0.0
for s, v in res.items():
    if v["windows"]:
        parts = []
        for lo_, hi_, ta, tb in v["windows"][:12]:
            span = (f"{ta / 1000 - t0:.0f}-{tb / 1000 - t0:.0f} s" if ta and tb else "measured ?")
            parts.append(f"{hi_ - lo_ + 1} ({span})")
        more = f" and {len(v['windows']) - 12} more runs" if len(v["windows"]) > 12 else ""
        print(f"  {s.upper()} lost, runs of consecutive ids (measured at, from 'gateways started'): {', '.join(parts)}{more}")
print(f"  load average at the end: {load_end}")
PY
for s in "${SETUPS[@]}"; do
  n=$(grep -c 'link lost' "$RUN/gw-$s.log" || true)
  echo "  gw-$s log: $n 'link lost' lines, $(grep -c ' error ' "$RUN/gw-$s.log" || true) error lines"
done
echo "  local Mosquitto B log: $(grep -ci 'dropped' "$RUN/local-b/mosquitto.log" || true) lines about dropped messages," \
  "$(grep -c 'Connecting bridge' "$RUN/local-b/mosquitto.log" || true) bridge connects"
