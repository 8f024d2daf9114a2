#!/usr/bin/env bash
# sanigate polling 100 simulated Modbus TCP garbage rooms every second (8 points each, 4 reads
# per device per cycle): CPU share and memory of the sanigate process over a measured window.
# Usage: bench/poll_bench.sh BUILD_DIR [devices=100] [seconds=30]
set -euo pipefail
BUILD=${1:?usage: poll_bench.sh BUILD_DIR [devices] [seconds]}
N=${2:-100}
SECS=${3:-30}
RUN=$(mktemp -d /tmp/sanigate-pollbench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ "${KEEP:-0}" = 1 ] && echo "kept $RUN" >&2 || rm -rf "$RUN"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$RUN/m.conf"
mosquitto -c "$RUN/m.conf" 2>/dev/null & PIDS+=($!)
# One simulator serves at most ~1000 sockets (select), so big runs use several, 400 devices each.
: > "$RUN/ports"
left=$N; k=0
while [ "$left" -gt 0 ]; do
  n=$(( left > 400 ? 400 : left ))
  "$BUILD/tests/sim/modbus_sim" --devices "$n" --dynamic --seed "$k" --port-file "$RUN/ports.$k" 2>/dev/null & PIDS+=($!)
  for _ in $(seq 100); do [ -s "$RUN/ports.$k" ] && break; sleep 0.1; done
  cat "$RUN/ports.$k" >> "$RUN/ports"
  left=$(( left - n )); k=$(( k + 1 ))
done
{
  printf '[gateway]\nid = "gw-bench"\nsite = "bench"\ndata_dir = "%s/data"\nlog_level = "warn"\n' "$RUN"
  printf '[mqtt]\nurl = "tcp://127.0.0.1:%s"\n[modbus]\nworkers = %s\n' "$port" "${WORKERS:-4}"
  i=0
  while read -r p; do
    printf '[[modbus.devices]]\nid = "room-%04d"\nhost = "127.0.0.1"\nport = %s\ninterval_ms = 1000\ntimeout_ms = 500\n' "$i" "$p"
    printf '[[modbus.devices.points]]\nmetric = "fill_level_pct"\naddress = 0\nscale = 0.1\n'
    printf '[[modbus.devices.points]]\nmetric = "temperature_c"\naddress = 1\ntype = "i16"\nscale = 0.1\n'
    printf '[[modbus.devices.points]]\nmetric = "nh3_ppm"\naddress = 2\ntype = "f32"\ndecimals = 2\n'
    printf '[[modbus.devices.points]]\nmetric = "h2s_ppm"\naddress = 6\ntype = "f32"\ndecimals = 2\n'
    printf '[[modbus.devices.points]]\nmetric = "water_level_pct"\ntable = "input"\naddress = 0\n'
    printf '[[modbus.devices.points]]\nmetric = "uv_lamp_on"\ntable = "coil"\naddress = 0\n'
    printf '[[modbus.devices.points]]\nmetric = "door_open"\ntable = "discrete"\naddress = 0\n'
    printf '[[modbus.devices.points]]\nmetric = "smoke"\ntable = "discrete"\naddress = 1\n'
    i=$((i+1))
  done < "$RUN/ports"
} > "$RUN/gw.toml"
mosquitto_sub -p "$port" -t 'sanigate/v1/bench/devices/+/telemetry' -q 1 > "$RUN/sub.txt" & PIDS+=($!)
"$BUILD/gateway/sanigate" --config "$RUN/gw.toml" 2> "$RUN/gw.log" & GW=$!; PIDS+=($GW)
sleep 5  # warm-up: connections made, first cycle done
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$GW/stat"; }
# Context switches per thread (voluntary + involuntary): the wake-ups the load costs.
switches() { for t in /proc/$GW/task/*; do echo "$(basename "$t") $(cat "$t/comm" | tr ' ' _) $(awk '/ctxt_switches/{s+=$2} END{print s}' "$t/status")"; done; }
switches > "$RUN/sw0"
c0=$(cpu); l0=$(wc -l < "$RUN/sub.txt"); t0=$(date +%s.%N)
sleep "$SECS"
c1=$(cpu); l1=$(wc -l < "$RUN/sub.txt"); t1=$(date +%s.%N)
switches > "$RUN/sw1"
rss=$(awk '/VmRSS/{print $2}' "/proc/$GW/status"); hwm=$(awk '/VmHWM/{print $2}' "/proc/$GW/status")
threads=$(awk '/Threads/{print $2}' "/proc/$GW/status")
python3 - "$c0" "$c1" "$tick" "$t0" "$t1" "$l0" "$l1" "$rss" "$hwm" "$N" "$threads" "$RUN/sw0" "$RUN/sw1" <<'PY'
import sys
c0,c1,tick,t0,t1,l0,l1,rss,hwm,n,threads,sw0,sw1=sys.argv[1:]
def load(path):
    out = {}
    for line in open(path):
        tid, name, count = line.split()
        out[tid] = (name, int(count))
    return out
before, after = load(sw0), load(sw1)
el=float(t1)-float(t0); cpu=(float(c1)-float(c0))/float(tick)
print(f"poll_bench: {n} Modbus TCP devices at 1 s, 8 points each, {el:.0f} s measured")
print(f"  sanigate CPU {100*cpu/el:.2f}% of one core, RSS {int(rss)/1024:.1f} MiB (peak {int(hwm)/1024:.1f} MiB), {threads} threads")
records = (int(l1)-int(l0))
print(f"  readings delivered to a subscriber: {records/el:.1f}/s (expected ~{n}/s)")
by_name = {}
for tid, (name, count) in after.items():
    by_name.setdefault(name, [0, 0])
    by_name[name][0] += count - before.get(tid, (name, 0))[1]
    by_name[name][1] += 1
total = sum(v[0] for v in by_name.values())
print(f"  context switches: {total/el:.0f}/s, {total/max(1,records):.2f} per record delivered; by thread name:")
for name, (count, k) in sorted(by_name.items(), key=lambda kv: -kv[1][0]):
    print(f"    {name:<16} x{k:<2} {count/el:8.1f}/s")
PY
