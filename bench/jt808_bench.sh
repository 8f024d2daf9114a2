#!/usr/bin/env bash
# JT/T 808 ingest benchmark (perf.md S6): a real mosquitto and a real sanigate on free loopback
# ports, with jt808_sim terminals connecting from 127.0.0.2-127.0.0.9. Scenarios:
#   a  idle:       IDLE_N mostly idle connections (heartbeats only): RSS per connection, CPU,
#                  extrapolated to 100k connections
#   b  1 Hz load:  LOAD_N terminals at 1 Hz for LOAD_S s, run twice: outbox defaults
#                  (commit_linger_ms 20, synchronous full) and commit_linger_ms 0 + normal
#   c  saturation: SAT_N terminals, each keeping SAT_PIPELINE reports unacknowledged: msgs/s per core
#   d  storm:      STORM_N terminals sending 0x0704 batches of STORM_BATCH, all reconnecting at
#                  STORM_AT_S s: reconnect time, unacked points, RSS growth
# Prints figures, asserts nothing. Every process it starts is tracked by PID and stopped on exit.
# Usage: bench/jt808_bench.sh [BUILD_DIR=./build] [a|b|c|d|all]
# Knobs (environment): IDLE_N IDLE_PER_SIM IDLE_WINDOW_S LOAD_N LOAD_S SAT_N SAT_S SAT_PIPELINE
#   STORM_N STORM_AT_S STORM_S STORM_BATCH STORM_INTERVAL_MS SOURCES KEEP=1 (keep the temp dir)
set -euo pipefail
BUILD=${1:-./build}
WHICH=${2:-all}
case "$WHICH" in a | b | c | d | all) ;; *) echo "usage: $0 [BUILD_DIR] [a|b|c|d|all]" >&2; exit 2 ;; esac
SIM=$BUILD/tests/sim/jt808_sim
GWBIN=$BUILD/gateway/sanigate
for f in "$SIM" "$GWBIN"; do [ -x "$f" ] || { echo "missing $f (build the jt808_sim and sanigate targets)" >&2; exit 2; }; done

IDLE_N=${IDLE_N:-15000}            # sanigate's own fd limit is 20000 here: stay below it
IDLE_PER_SIM=${IDLE_PER_SIM:-5000}
IDLE_WINDOW_S=${IDLE_WINDOW_S:-20}
LOAD_N=${LOAD_N:-5000}
LOAD_S=${LOAD_S:-30}
SAT_N=${SAT_N:-200}
SAT_S=${SAT_S:-20}
SAT_PIPELINE=${SAT_PIPELINE:-32}
STORM_N=${STORM_N:-5000}
STORM_AT_S=${STORM_AT_S:-10}
STORM_S=${STORM_S:-25}
STORM_BATCH=${STORM_BATCH:-50}
STORM_INTERVAL_MS=${STORM_INTERVAL_MS:-10000}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.9}
CONNECT_MAX_S=60                   # longest wait for every terminal to be connected

RUN=$(mktemp -d /tmp/sanigate-jt808bench.XXXXXX)
PIDS=()
SUMMARY=()
TICK=$(getconf CLK_TCK)
BENCH_START=$SECONDS

# Stops one of our processes: TERM, up to $2 s of grace, then KILL; reaps it and forgets it.
stop_pid() {
  local pid=$1 grace=${2:-10} i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu_sum() { local p s=0; for p in "$@"; do s=$((s + $(cpu_ticks "$p"))); done; echo "$s"; }
host_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }  # busy total
established() { ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l; }
# Publishes mosquitto has received (its $SYS counter, refreshed every second).
mqtt_received() {
  timeout 5 mosquitto_sub -p "$MQ" -C 1 -W 4 -t '$SYS/broker/publish/messages/received' 2>/dev/null || echo 0
}
now() { date +%s.%N; }
calc() { python3 -c "import sys; print($1)"; }
row() { SUMMARY+=("$(printf '%-4s %-52s %s' "$1" "$2" "$3")"); printf '  %-52s %s\n' "$2" "$3"; }

# ---- mosquitto ---------------------------------------------------------------------------------
MQ=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nsys_interval 1\nmax_queued_messages 100000\nset_tcp_nodelay true\n' "$MQ" > "$RUN/mosquitto.conf"
mosquitto -c "$RUN/mosquitto.conf" 2> "$RUN/mosquitto.log" & MQPID=$!
PIDS+=("$MQPID")
wait_port "$MQ"

# ---- sanigate ----------------------------------------------------------------------------------
# start_gw NAME [OUTBOX_TOML]: a fresh sanigate (own data dir, own port); sets GW, JP, DIR.
start_gw() {
  DIR=$RUN/$1
  mkdir -p "$DIR/data"
  JP=$(free_port)
  {
    printf '[gateway]\nid = "gw-bench"\nsite = "bench"\ndata_dir = "%s/data"\nlog_level = "warn"\n' "$DIR"
    printf '[mqtt]\nurl = "tcp://127.0.0.1:%s"\n' "$MQ"
    printf '[outbox]\n%s\n' "${2:-}"
    printf '[jt808]\nlisten = "127.0.0.1:%s"\nunknown_terminals = "register"\ndevice_prefix = "truck-"\n' "$JP"
  } > "$DIR/gw.toml"
  "$GWBIN" --config "$DIR/gw.toml" 2> "$DIR/gw.log" & GW=$!
  PIDS+=("$GW")
  wait_port "$JP"
  sleep 1
}
stop_gw() {
  stop_pid "$GW" 15
  local w
  w=$(grep -c -E ' (warning|error|critical) ' "$DIR/gw.log" || true)
  [ "$w" = 0 ] || echo "  (sanigate logged $w warnings/errors, e.g.: $(grep -m1 -E ' (warning|error|critical) ' "$DIR/gw.log" | cut -c1-160))"
}

# start_sims N PER_SIM ARGS...: N terminals over ceil(N/PER_SIM) simulators; sets SIMS.
start_sims() {
  local n=$1 per=$2 k=0 left
  shift 2
  SIMS=()
  left=$n
  while [ "$left" -gt 0 ]; do
    local m=$((left > per ? per : left))
    "$SIM" --port "$JP" --terminals "$m" --phone-base $((13800000000 + k * 100000)) \
      --source-ips "$SOURCES" --stats-json "$DIR/sim.$k.json" "$@" > "$DIR/sim.$k.out" 2> "$DIR/sim.$k.err" &
    SIMS+=($!)
    PIDS+=($!)
    left=$((left - m))
    k=$((k + 1))
  done
}
# wait_sims MAX_S: the simulators end by themselves (--duration-s); past MAX_S they are stopped.
wait_sims() {
  local deadline=$((SECONDS + $1)) p
  for p in "${SIMS[@]}"; do
    while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    stop_pid "$p" 5
  done
}
# Sum of the simulators' stats; latency percentiles are the worst simulator's (runs b-d use one).
sim_stats() {
  python3 - "$DIR" <<'PY'
import glob, json, sys
s = [json.load(open(f)) for f in sorted(glob.glob(sys.argv[1] + "/sim.*.json"))]
if not s:
    print("no simulator stats"); sys.exit()
tot = {k: sum(x[k] for x in s) for k in s[0] if isinstance(s[0][k], int)}
for k in ("ack_p50_ms", "ack_p99_ms", "ack_max_ms", "storm_reconnect_s"):
    if k in s[0]: tot[k] = max(x[k] for x in s) if min(x[k] for x in s) >= 0 else -1
for k in ("msgs_per_s", "points_per_s"): tot[k] = sum(x[k] for x in s)
print(json.dumps(tot))
PY
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], 0))" "$1" "$2"; }
# wait_connected N MAX_S: until sanigate holds N established connections; prints the seconds.
wait_connected() {
  local deadline=$((SECONDS + $2)) c=0
  while [ $SECONDS -lt $deadline ]; do
    c=$(established "$JP")
    [ "$c" -ge "$1" ] && break
    sleep 0.5
  done
  echo "$c"
}
host_note() {  # what else ran on the machine during a window: busy share of all cores
  local b=$1 t=$2 b1 t1
  read -r b1 t1 < <(host_ticks)
  calc "f'{100*($b1-$b)/max(1,$t1-$t):.0f}% of $(nproc) cores busy'"
}

echo "jt808_bench: $(date -Is), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), build $BUILD"
echo "  mosquitto on 127.0.0.1:$MQ, sources $SOURCES, outbox in $RUN (filesystem $(df -T "$RUN" | awk 'NR==2{print $2}'))"

# ---- (a) idle ------------------------------------------------------------------------------------
scenario_a() {
  echo "(a) idle: $IDLE_N connections, heartbeats every 30 s, no reports; ${IDLE_WINDOW_S} s window"
  start_gw a
  local rss0 t0 conn c0 s0 hb ht rss1 rss2 c1 el
  rss0=$(rss_kb "$GW")
  t0=$(now)
  start_sims "$IDLE_N" "$IDLE_PER_SIM" --interval-ms 0 --heartbeat-s 30 \
    --duration-s $((CONNECT_MAX_S + IDLE_WINDOW_S + 15))
  conn=$(wait_connected "$IDLE_N" "$CONNECT_MAX_S")
  local tconn
  tconn=$(calc "$(now)-$t0")
  sleep 5  # the auth status records are committed and published
  rss1=$(rss_kb "$GW")
  c0=$(cpu_ticks "$GW"); s0=$(cpu_sum "${SIMS[@]}"); read -r hb ht < <(host_ticks); t0=$(now)
  sleep "$IDLE_WINDOW_S"
  c1=$(cpu_ticks "$GW"); el=$(calc "$(now)-$t0")
  local s1 note
  s1=$(cpu_sum "${SIMS[@]}"); note=$(host_note "$hb" "$ht")
  rss2=$(rss_kb "$GW")
  local fds thr status_b
  fds=$(ls "/proc/$GW/fd" | wc -l); thr=$(awk '/Threads/{print $2}' "/proc/$GW/status")
  # The retained gateway status with every terminal connected (issue 20: <= 16 KB at 20k devices).
  status_b=$(timeout 10 mosquitto_sub -p "$MQ" -C 1 -W 8 -t 'sanigate/v1/bench/gateway/gw-bench/status' 2> /dev/null | wc -c)
  for p in "${SIMS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait_sims 10
  local st
  st=$(sim_stats)
  stop_gw
  local per
  per=$(calc "($rss2-$rss0)/max(1,$conn)")
  row a "connections established (sanigate side)" "$conn of $IDLE_N in $(calc "f'{$tconn:.1f}'") s; authenticated $(field "$st" authenticated), errors $(field "$st" errors)"
  row a "sanigate RSS before / connected / after window" "$(calc "f'{$rss0/1024:.1f} / {$rss1/1024:.1f} / {$rss2/1024:.1f} MiB'") ($fds fds, $thr threads)"
  row a "retained gateway status (target <= 16 KB at 20k devices)" "$status_b bytes with $conn terminals connected"
  row a "RSS per connection" "$(calc "f'{$per:.2f} KiB'")"
  row a "extrapolated RSS at 100k connections (target <=400 MB)" "$(calc "f'{($rss0+$per*100000)/1024:.0f} MiB'")"
  row a "sanigate CPU, idle window (target <=10%)" "$(calc "f'{100*($c1-$c0)/$TICK/$el:.2f}% of one core'") (heartbeats ~$((IDLE_N / 30))/s; sims $(calc "f'{100*($s1-$s0)/$TICK/$el:.1f}%'"); host $note)"
}

# ---- (b) 1 Hz load -------------------------------------------------------------------------------
# run_load LABEL OUTBOX_TOML
run_load() {
  echo "(b) 1 Hz: $LOAD_N terminals, one 0x0200 per second each, ${LOAD_S} s; outbox: $1"
  start_gw "b-$2" "$3"
  local t0 conn start_s
  start_s=$SECONDS
  t0=$(now)
  start_sims "$LOAD_N" 20000 --interval-ms 1000 --heartbeat-s 30 --duration-s $((LOAD_S + 12))
  conn=$(wait_connected "$LOAD_N" 10)
  local tconn
  tconn=$(calc "$(now)-$t0")
  sleep 2
  # Measure LOAD_S seconds, or what is left of the simulators' run.
  local win=$((LOAD_S < start_s + LOAD_S + 11 - SECONDS ? LOAD_S : start_s + LOAD_S + 11 - SECONDS))
  local c0 s0 m0 hb ht c1 s1 m1 el note r0
  c0=$(cpu_ticks "$GW"); s0=$(cpu_sum "${SIMS[@]}"); m0=$(mqtt_received); read -r hb ht < <(host_ticks); t0=$(now)
  r0=$(cpu_ticks "$MQPID")
  sleep "$win"
  c1=$(cpu_ticks "$GW"); s1=$(cpu_sum "${SIMS[@]}"); m1=$(mqtt_received); el=$(calc "$(now)-$t0")
  local r1
  r1=$(cpu_ticks "$MQPID"); note=$(host_note "$hb" "$ht")
  local rss
  rss=$(rss_kb "$GW")
  wait_sims 30
  local st
  st=$(sim_stats)
  stop_gw
  row "b$2" "[$1] connected / authenticated" "$conn in $(calc "f'{$tconn:.1f}'") s / $(field "$st" authenticated); errors $(field "$st" errors), reconnects $(field "$st" reconnects)"
  row "b$2" "[$1] reports sent / acked ok / fail / unacked" "$(field "$st" reports_sent) / $(field "$st" acks_ok) / $(field "$st" acks_fail) / $(field "$st" unacked) ($(field "$st" msgs_per_s) msgs/s)"
  row "b$2" "[$1] sanigate CPU (target <=0.4 core at 20k/s)" "$(calc "f'{($c1-$c0)/$TICK/$el:.3f} cores'") over $(calc "f'{$el:.0f}'") s, RSS $(calc "f'{$rss/1024:.1f}'") MiB"
  row "b$2" "[$1] ack latency p50 / p99 / max (target p99 <=2 ms)" "$(field "$st" ack_p50_ms) / $(field "$st" ack_p99_ms) / $(field "$st" ack_max_ms) ms"
  row "b$2" "[$1] MQTT publishes received by mosquitto" "$(calc "f'{($m1-$m0)/$el:.0f}/s'") (mosquitto $(calc "f'{($r1-$r0)/$TICK/$el:.2f}'") cores, sim $(calc "f'{($s1-$s0)/$TICK/$el:.2f}'") cores, host $note)"
}
scenario_b() {
  run_load "defaults: linger 20 ms, sync full" 1 ""
  run_load "linger 0, sync normal" 2 $'commit_linger_ms = 0\nsynchronous = "normal"'
}

# ---- (c) saturation ------------------------------------------------------------------------------
scenario_c() {
  echo "(c) saturation: $SAT_N terminals, $SAT_PIPELINE unacked reports each, ${SAT_S} s (outbox defaults)"
  start_gw c
  local c0 s0 m0 hb ht t0
  c0=$(cpu_ticks "$GW"); m0=$(mqtt_received); read -r hb ht < <(host_ticks); t0=$(now)
  start_sims "$SAT_N" 20000 --interval-ms 1 --pipeline "$SAT_PIPELINE" --heartbeat-s 30 --duration-s "$SAT_S"
  local sp=${SIMS[0]}
  s0=0
  local s1=0 x
  # Sample the simulator's CPU until it exits (its /proc entry vanishes then).
  while kill -0 "$sp" 2>/dev/null; do x=$(cpu_ticks "$sp"); [ "$x" -gt 0 ] && s1=$x; sleep 0.5; done
  local c1 el note
  c1=$(cpu_ticks "$GW"); el=$(calc "$(now)-$t0"); note=$(host_note "$hb" "$ht")
  wait_sims 10
  local st acks
  st=$(sim_stats)
  acks=$(field "$st" acks_ok)
  # sanigate keeps publishing its outbox backlog after the terminals stop: wait (at most 60 s)
  # until mosquitto has them all, or stops getting more, and count that CPU too.
  local m1 mt prev=-1 same=0 i tt rss
  mt=$(mqtt_received); tt=$(now)
  for ((i = 0; i < 60; i++)); do
    m1=$(mqtt_received)
    [ "$m1" -ge $((m0 + acks)) ] && break
    if [ "$m1" = "$prev" ]; then same=$((same + 1)); [ $same -ge 3 ] && break; else same=0; fi
    prev=$m1
    sleep 1
  done
  local c2 el2
  c2=$(cpu_ticks "$GW"); el2=$(calc "$(now)-$t0"); rss=$(rss_kb "$GW")
  local tail_rate
  tail_rate=$(calc "f'{($m1-$mt)/max(1e-9,$(now)-$tt):.0f}'")
  stop_gw
  row c "reports acked / fail / unacked, errors" "$acks / $(field "$st" acks_fail) / $(field "$st" unacked), $(field "$st" errors)"
  row c "ingest rate (acked 0x0200/s)" "$(field "$st" msgs_per_s) msgs/s; ack p50 $(field "$st" ack_p50_ms) ms, p99 $(field "$st" ack_p99_ms) ms"
  row c "sanigate CPU while terminals send" "$(calc "f'{($c1-$c0)/$TICK/$el:.2f} cores over {$el:.0f} s'"), RSS $(calc "f'{$rss/1024:.1f}'") MiB"
  row c "msgs per sanigate CPU-second, ingest only (>=60k)" "$(calc "f'{$acks/max(1e-9,($c1-$c0)/$TICK):.0f}'")"
  row c "msgs per CPU-second incl. publish tail" "$(calc "f'{$acks/max(1e-9,($c2-$c0)/$TICK):.0f}'") (tail $(calc "f'{$el2-$el:.0f}'") s; mosquitto got $((m1 - m0)) publishes)"
  row c "outbox -> MQTT publish rate after the terminals stopped" "$tail_rate/s"
  row c "simulator CPU / host" "$(calc "f'{$s1/$TICK/$el:.2f} cores'") / $note"
}

# ---- (d) storm -----------------------------------------------------------------------------------
scenario_d() {
  echo "(d) storm: $STORM_N terminals, 0x0704 batches of $STORM_BATCH every $((STORM_INTERVAL_MS / 1000)) s, all reconnect at ${STORM_AT_S} s, ${STORM_S} s"
  start_gw d
  local start_s=$SECONDS conn
  start_sims "$STORM_N" 20000 --batch "$STORM_BATCH" --interval-ms "$STORM_INTERVAL_MS" --heartbeat-s 30 \
    --storm-at-s "$STORM_AT_S" --duration-s "$STORM_S" --drain-ms 10000
  conn=$(wait_connected "$STORM_N" 10)
  while [ $SECONDS -lt $((start_s + STORM_AT_S - 1)) ]; do sleep 0.2; done
  local rss0 peak=0 r c0 hb ht t0
  rss0=$(rss_kb "$GW"); c0=$(cpu_ticks "$GW"); read -r hb ht < <(host_ticks); t0=$(now)
  local last=$rss0
  while kill -0 "${SIMS[0]}" 2>/dev/null; do
    r=$(rss_kb "$GW"); [ "$r" -gt "$peak" ] && peak=$r; [ "$r" -gt 0 ] && last=$r
    sleep 0.5
  done
  local c1 el note
  c1=$(cpu_ticks "$GW"); el=$(calc "$(now)-$t0"); note=$(host_note "$hb" "$ht")
  wait_sims $((STORM_S + 20))
  sleep 2
  local rss2 st
  rss2=$(rss_kb "$GW")
  st=$(sim_stats)
  stop_gw
  row d "connected before the storm / storm terminals" "$conn / $(field "$st" storm_terminals)"
  row d "reconnect time (all re-authenticated)" "$(field "$st" storm_reconnect_s) s ($(field "$st" storm_reconnected) reconnected; -1 = not all)"
  row d "batches acked / fail / unacked, resent after storm" "$(field "$st" acks_ok) / $(field "$st" acks_fail) / $(field "$st" unacked), $(field "$st" resent)"
  row d "points sent / points per s acked" "$(field "$st" points_sent) / $(field "$st" points_per_s); ack p99 $(field "$st" ack_p99_ms) ms"
  row d "RSS before storm / peak / end / idle after (target <20%)" "$(calc "f'{$rss0/1024:.1f} / {$peak/1024:.1f} / {$last/1024:.1f} / {$rss2/1024:.1f} MiB; peak +{100*($peak-$rss0)/$rss0:.0f}%, end +{100*($last-$rss0)/$rss0:.0f}%'")"
  row d "sanigate CPU from storm-1 s to end / host" "$(calc "f'{($c1-$c0)/$TICK/$el:.2f} cores'") / $note"
}

case "$WHICH" in
  a) scenario_a ;;
  b) scenario_b ;;
  c) scenario_c ;;
  d) scenario_d ;;
  all) scenario_a; scenario_b; scenario_c; scenario_d ;;
esac

echo
echo "jt808_bench summary ($((SECONDS - BENCH_START)) s, load average now $(cut -d' ' -f1-3 /proc/loadavg)):"
printf '%s\n' "${SUMMARY[@]}"
