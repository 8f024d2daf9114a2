#!/usr/bin/env bash
# LoRaWAN ingest benchmark (perf.md S5): a real mosquitto and sanigate as the edge network server,
# lora_sim sending ABP uplinks with real MICs that CONCENTRATORS concentrators all hear (so every
# uplink is CONCENTRATORS gateway-uplinks to check and de-duplicate). Prints the gateway-uplinks/s
# offered and ingested, sanigate's CPU, PUSH_ACK latency from the sim, and what reached mosquitto.
# Asserts nothing. Every process it starts is tracked by PID and stopped on exit.
# Usage: bench/lorawan_bench.sh [BUILD_DIR=./build] [UPLINKS_PER_S=7000] [SECONDS=15]
set -euo pipefail
BUILD=${1:-./build}
RATE=${2:-7000}
SECS=${3:-15}
DEVICES=${DEVICES:-2000}
CONCENTRATORS=${CONCENTRATORS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=$(mktemp -d /tmp/lorawan-bench.XXXXXX)
PIDS=()
cleanup() {
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; kill -KILL "$pid" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$RUN"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

MQ=$(free_port); UDP=$(free_port)
sed "s/^listener 1883 /listener $MQ /" "$ROOT/packaging/mosquitto-demo.conf" > "$RUN/mosquitto.conf"
/usr/sbin/mosquitto -c "$RUN/mosquitto.conf" 2> "$RUN/mosquitto.log" & PIDS+=($!)
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$MQ") 2>/dev/null && break; sleep 0.1; done

python3 - "$RUN/sanigate.toml" "$MQ" "$UDP" "$DEVICES" "$RUN" "$ROOT" <<'PY'
import sys
path, mq, udp, n, run, root = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
with open(path, "w") as f:
    f.write(f'[gateway]\nid = "gw-bench"\nsite = "bench"\ndata_dir = "{run}/data"\nlog_level = "warn"\n\n')
    f.write(f'[mqtt]\nurl = "tcp://127.0.0.1:{mq}"\n\n')
    f.write(f'[lorawan]\nlisten = "127.0.0.1:{udp}"\nprofiles_dir = "{root}/config/profiles"\n')
    for i in range(n):
        f.write(f'\n[[lorawan.devices]]\nid = "bin-{i}"\ndev_eui = "{0x0102030405060000 + i:016X}"\nactivation = "abp"\n'
                f'dev_addr = "{0x26010000 + i:08X}"\nnwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C"\n'
                f'app_s_key = "000102030405060708090A0B0C0D0E0F"\nprofile = "bin-monitor-ultrasonic-v1"\n')
PY
"$BUILD/gateway/sanigate" --config "$RUN/sanigate.toml" 2> "$RUN/sanigate.log" & GW=$!; PIDS+=($GW)
sleep 1  # UDP has no accept to wait for; sanigate binds within milliseconds of start
SYS_BEFORE=$(mosquitto_sub -p "$MQ" -t '$SYS/broker/publish/messages/received' -C 1 -W 5 || echo 0)
T0=$(cpu_ticks "$GW")
"$BUILD/tests/sim/lora_sim" --port "$UDP" --mode abp --devices "$DEVICES" --concentrators "$CONCENTRATORS" \
  --rate "$RATE" --duration-s "$SECS" --quiet --stats-json "$RUN/sim.json" > "$RUN/sim.out" 2>&1
T1=$(cpu_ticks "$GW")
sleep 2
SYS_AFTER=$(mosquitto_sub -p "$MQ" -t '$SYS/broker/publish/messages/received' -C 1 -W 5 || echo 0)
HZ=$(getconf CLK_TCK)
python3 - "$RUN/sim.json" "$T0" "$T1" "$HZ" "$SECS" "$CONCENTRATORS" "$SYS_BEFORE" "$SYS_AFTER" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t0, t1, hz, secs, k = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
cores = (t1 - t0) / hz / secs
up = s.get("uplinks_sent", 0)
print(f"offered       {up / secs:.0f} uplinks/s x {k} concentrators = {up * k / secs:.0f} gateway-uplinks/s")
print(f"sanigate CPU  {cores:.2f} cores -> {up * k / secs / max(cores, 1e-9):.0f} gateway-uplinks per CPU-second")
lat = s.get("push_ack_latency_ms", {})
print(f"PUSH_ACK      {s.get('push_acks', 0)} of {s.get('push_data_sent', 0)}; p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, max {lat.get('max')} ms")
print(f"published     {int(float(sys.argv[8])) - int(float(sys.argv[7]))} messages reached mosquitto (readings and events)")
PY
