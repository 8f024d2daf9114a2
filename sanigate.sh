#!/usr/bin/env bash
# Sanigate set-up: `./sanigate.sh demo` or `./sanigate.sh test` (see README).
# Installs what is missing from Debian 12 (apt), configures and builds into build/, then runs the
# demo or the whole test suite. Run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
BUILD="$ROOT/build"

PACKAGES=(build-essential cmake pkg-config git
  mosquitto mosquitto-clients libpaho-mqttpp-dev libpaho-mqtt-dev libmodbus-dev
  libsqlite3-dev sqlite3 libboost-dev libssl-dev openssl libtomlplusplus-dev nlohmann-json3-dev
  libcli11-dev libspdlog-dev libgtest-dev libgmock-dev python3 python3-jsonschema procps libpng-dev libabsl-dev)

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "sanigate.sh: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() {
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${SANIGATE_CMAKE_ARGS:-} >/dev/null
  cmake --build "$BUILD" -j"${SANIGATE_JOBS:-2}"
}

cmd=${1:-}
case "$cmd" in
  demo)
    install_packages
    build
    exec "$ROOT/packaging/demo.sh" "$BUILD"
    ;;
  test)
    install_packages
    build
    cd "$BUILD"
    exec ctest --output-on-failure --timeout 600 ${SANIGATE_CTEST_ARGS:-}
    ;;
  build)
    install_packages
    build
    ;;
  *)
    echo "usage: $0 demo|test|build" >&2
    exit 2
    ;;
esac
