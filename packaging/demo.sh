#!/usr/bin/env bash
# The demo site: a local Mosquitto (packaging/mosquitto-demo.conf on a free loopback port), three
# simulated garbage rooms (tests/sim/modbus_sim --dynamic), trucks and bins, sanigate and sanifleet, with the live normalized
# stream shown by mosquitto_sub. Ctrl-C stops everything this script started, by PID.
set -euo pipefail
BUILD=${1:?usage: demo.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=$(mktemp -d /tmp/sanigate-demo.XXXXXX)
PIDS=()

cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  # Newest first: the gateway says goodbye to the broker before the broker goes.
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do
    pid=${PIDS[$i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  echo "demo: logs kept in $RUN"
}
trap cleanup INT TERM EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "demo: $1 did not appear" >&2; return 1; }
wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "demo: port $1 not open" >&2; return 1; }

PORT=$(free_port)
sed "s/^listener 1883 /listener $PORT /" "$ROOT/packaging/mosquitto-demo.conf" > "$RUN/mosquitto.conf"
/usr/sbin/mosquitto -c "$RUN/mosquitto.conf" 2> "$RUN/mosquitto.log" &
PIDS+=($!)
wait_port "$PORT"

"$BUILD/tests/sim/modbus_sim" --devices 3 --dynamic --port-file "$RUN/sim.ports" 2> "$RUN/sim.log" &
PIDS+=($!)
wait_file "$RUN/sim.ports"
mapfile -t SIM < "$RUN/sim.ports"

# The demo config: the shipped sample with the ports of this run.
{
  sed -e "s|^data_dir = .*|data_dir = \"$RUN/data\"|" -e "s|^url = .*|url = \"tcp://127.0.0.1:$PORT\"|" \
    "$ROOT/config/demo/sanigate-demo.toml"
} > "$RUN/sanigate.toml"
for i in 0 1 2; do sed -i "s|@PORT$i@|${SIM[$i]}|" "$RUN/sanigate.toml"; done
JT808_PORT=$(free_port)
LORA_PORT=$(free_port)
sed -i -e "s|@PORT3@|$JT808_PORT|" -e "s|@PORT4@|$LORA_PORT|" -e "s|@PROFILES@|$ROOT/config/profiles|" "$RUN/sanigate.toml"

"$BUILD/gateway/sanigate" --config "$RUN/sanigate.toml" 2> "$RUN/sanigate.log" &
PIDS+=($!)
wait_port "$JT808_PORT"

# The fleet manager: registry and health of everything above, from the MQTT model only.
sed -e "s|^data_dir = .*|data_dir = \"$RUN/fleet\"|" -e "s|^url = .*|url = \"tcp://127.0.0.1:$PORT\"|" \
  "$ROOT/config/sanifleet.toml" > "$RUN/sanifleet.toml"
"$BUILD/fleet/sanifleet" --config "$RUN/sanifleet.toml" 2> "$RUN/sanifleet.log" &
PIDS+=($!)

# Five trucks reporting every 5 s (one presses SOS now and then), four bins over two concentrators.
"$BUILD/tests/sim/jt808_sim" --port "$JT808_PORT" --terminals 5 --interval-ms 5000 --sos-every 12 \
  --answer-commands --duration-s 86400 > "$RUN/jt808_sim.out" 2> "$RUN/jt808_sim.log" &
PIDS+=($!)
"$BUILD/tests/sim/lora_sim" --port "$LORA_PORT" --mode otaa --devices 4 --concentrators 2 \
  --interval-ms 15000 --duration-s 86400 --quiet > "$RUN/lora_sim.out" 2> "$RUN/lora_sim.log" &
PIDS+=($!)

echo "demo: Mosquitto on 127.0.0.1:$PORT; simulated: 3 garbage rooms (Modbus TCP), 5 trucks"
echo "demo: (JT/T 808 on :$JT808_PORT), 4 bins (LoRaWAN OTAA via 2 concentrators on udp :$LORA_PORT)."
echo "demo: try: mosquitto_rr -p $PORT -t sanigate/v1/houpu/devices/truck-13800000000/cmd/locate -e me/answer -m ''"
echo "demo: fleet health: mosquitto_rr -p $PORT -t sanigate/v1/houpu/fleet/admin/health -e me/answer -m '{\"problems\":true}'"
[ -x "$BUILD/fleet/ctl/sanictl" ] && echo "demo: or: $BUILD/fleet/ctl/sanictl --broker tcp://127.0.0.1:$PORT --site houpu health"
[ -x "$BUILD/fleet/ctl/sanictl" ] && echo "demo: heat map: $BUILD/fleet/ctl/sanictl --broker tcp://127.0.0.1:$PORT --site houpu heatmap show --layer vehicle_coverage"
echo "demo: logs: $RUN/sanigate.log, $RUN/sanifleet.log   (Ctrl-C stops everything)"
echo "demo: live stream of sanigate/v1/# :"
# In the foreground: Ctrl-C reaches it, it exits, and the EXIT trap stops the rest.
mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -t 'sanigate/v1/#' -v || true
