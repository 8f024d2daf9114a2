#!/usr/bin/env bash
# Sanigate set-up: `./sanigate.sh demo` or `./sanigate.sh test` (see README); `./sanigate.sh fuzz
# [SECONDS]` builds the libFuzzer targets with clang into build-fuzz/ and runs each for SECONDS
# (tests/fuzz/README.md); `./sanigate.sh package` builds the Debian package into build/
# (packaging/README.md).
# Installs what is missing from Debian 12 (apt), configures and builds into build/, then runs the
# demo or the whole test suite. Run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
BUILD="$ROOT/build"

PACKAGES=(build-essential cmake pkg-config git
  mosquitto mosquitto-clients libmosquitto-dev libpaho-mqttpp-dev libpaho-mqtt-dev libmodbus-dev
  libsqlite3-dev sqlite3 libboost-dev libssl-dev openssl libtomlplusplus-dev nlohmann-json3-dev
  libcli11-dev libspdlog-dev libgtest-dev libgmock-dev python3 python3-jsonschema procps libpng-dev libabsl-dev
  libsystemd-dev libzstd-dev zlib1g-dev)

# Only for `fuzz`: clang and its libFuzzer/ASan/UBSan runtimes.
FUZZ_PACKAGES=(clang libclang-rt-dev)

# For `package` and `test`: dpkg-shlibdeps (dpkg-dev) and file, which CPack's DEB generator runs;
# lintian, which checks the package; systemd, whose systemd-analyze verifies the units.
PACKAGE_PACKAGES=(dpkg-dev file lintian systemd)

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
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

# `fuzz [SECONDS]`: configures build-fuzz/ with clang, every library instrumented for libFuzzer
# with ASan and UBSan (asserts on, -O1), builds the fuzz targets, then runs each one listed in
# tests/fuzz/targets.conf for SECONDS. The repository's corpus is read, never written: new inputs
# go to build-fuzz/fuzz-corpus/<name>/, crashes to build-fuzz/artifacts/<name>/. Prints per target
# the executions, coverage (cov, ft) and crashes; exits 1 when any target found one or did not
# build. SECONDS 0 only builds. SANIGATE_FUZZ_RUNS=N also stops each target after N inputs (the
# issue's "10 million executions or one hour": SANIGATE_FUZZ_RUNS=10000000 ... fuzz 3600);
# SANIGATE_FUZZ_TARGETS="a b" runs only those targets.
fuzz() {
  local secs=$1 fb="$ROOT/build-fuzz" fdir="$ROOT/tests/fuzz"
  [[ "$secs" =~ ^[0-9]+$ ]] || { echo "sanigate.sh fuzz: SECONDS must be a whole number (0: build only)" >&2; exit 2; }
  # Boost 1.74 enables co_await under clang only with libc++; with libstdc++'s <coroutine> it works
  # once told to (the daemons' adapters use Asio coroutines). clang 14 cannot emit UBSan's
  # -fsanitize=function data for coroutines ("Cannot represent a difference across sections"),
  # so that one check is left out.
  local san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=function -fno-sanitize-recover=undefined"
  san+=" -fno-omit-frame-pointer -DBOOST_ASIO_HAS_CO_AWAIT=1"
  # gcc only warns about a narrowing conversion in a braced initializer; clang refuses it.
  san+=" -Wno-error=c++11-narrowing"
  CC=clang CXX=clang++ cmake -S "$ROOT" -B "$fb" -DSANIGATE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" ${SANIGATE_FUZZ_CMAKE_ARGS:-} >/dev/null
  # No stale binaries: a target whose code does not build is reported and skipped, the others
  # still build (make -k) and run.
  rm -f "$fb"/tests/fuzz/fuzz_*
  local found=0 report=()
  if ! cmake --build "$fb" --target fuzz_targets -j"${SANIGATE_JOBS:-2}" -- -k; then
    echo "sanigate.sh fuzz: some fuzz targets did not build (errors above); the others run" >&2
    found=1
  fi
  [ "$secs" -eq 0 ] && return $found
  while read -r name maxlen dict; do
    [ -z "$name" ] || [[ "$name" == \#* ]] && continue
    [ -n "${SANIGATE_FUZZ_TARGETS:-}" ] && [[ " $SANIGATE_FUZZ_TARGETS " != *" $name "* ]] && continue
    local bin="$fb/tests/fuzz/fuzz_$name" scratch="$fb/fuzz-corpus/$name" art="$fb/artifacts/$name" log="$fb/logs/$name.log"
    if [ ! -x "$bin" ]; then
      echo "sanigate.sh fuzz: $name was not built (see the build errors or CMake warnings); skipped"
      report+=("$(printf '%-18s %12s %7s %7s %8s' "$name" skipped - - -)")
      continue
    fi
    mkdir -p "$scratch" "$art" "$(dirname "$log")"
    local args=(-max_total_time="$secs" -max_len="$maxlen" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
                -artifact_prefix="$art/")
    [ "$dict" != "-" ] && args+=(-dict="$fdir/dict/$dict")
    [ -n "${SANIGATE_FUZZ_RUNS:-}" ] && args+=(-runs="$SANIGATE_FUZZ_RUNS")
    local before; before=$(find "$art" -type f | wc -l)
    echo "sanigate.sh fuzz: $name for ${secs}s"
    ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
      "$bin" "${args[@]}" "$scratch" "$fdir/corpus/$name" </dev/null >"$log" 2>&1 || true
    local execs cov ft crashes
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    crashes=$(( $(find "$art" -type f | wc -l) - before ))
    [ "$crashes" -gt 0 ] && found=1
    report+=("$(printf '%-18s %12s %7s %7s %8s' "$name" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$crashes")")
    [ "$crashes" -gt 0 ] && echo "  crash: see $log and $art/"
  done <"$fdir/targets.conf"
  printf '\n%-18s %12s %7s %7s %8s\n' target execs cov ft crashes
  printf '%s\n' "${report[@]}"
  return $found
}

# `package`: the Debian package (packaging/README.md). Configures build-package/ with Debian's
# hardening flags (dpkg-buildflags, hardening=+all) and without the tests, builds the three
# executables, runs CPack's DEB generator and moves the .deb into build/. Every CMake step holds
# /tmp/sanigate-build.lock (the machine's builds share it). Runs lintian when it is installed.
package() {
  local pb="$ROOT/build-package" lock=/tmp/sanigate-build.lock
  local cflags cxxflags cppflags ldflags
  cflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS)
  cxxflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CXXFLAGS)
  cppflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS)
  ldflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)
  flock "$lock" cmake -S "$ROOT" -B "$pb" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSANIGATE_TESTS=OFF \
    -DSANIGATE_PACKAGING=ON -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_C_FLAGS="$cflags $cppflags" -DCMAKE_CXX_FLAGS="$cxxflags $cppflags" \
    -DCMAKE_EXE_LINKER_FLAGS="$ldflags" ${SANIGATE_PACKAGE_CMAKE_ARGS:-} >/dev/null
  flock "$lock" cmake --build "$pb" -j"${SANIGATE_JOBS:-2}" --target sanigate sanifleet sanictl
  rm -f "$pb"/sanigate_*.deb
  (cd "$pb" && flock "$lock" cpack -G DEB)
  mkdir -p "$BUILD"
  local deb
  deb=$(ls "$pb"/sanigate_*.deb)
  mv -f "$deb" "$BUILD/"
  deb="$BUILD/$(basename "$deb")"
  echo "sanigate.sh: built $deb"
  if command -v lintian >/dev/null; then
    echo "sanigate.sh: lintian (remaining tags are explained in packaging/README.md):"
    lintian --display-info "$deb" || true
  fi
}

cmd=${1:-}
case "$cmd" in
  demo)
    install_packages
    build
    exec "$ROOT/packaging/demo.sh" "$BUILD"
    ;;
  test)
    install_packages "${PACKAGE_PACKAGES[@]}"
    build
    cd "$BUILD"
    # The Debian package from this build (not hardened: that is `package`), so the test run
    # checks its contents, conffiles, units, configs and broker drop-in (tests/package).
    rm -f sanigate_*.deb
    cpack -G DEB > cpack.log 2>&1 || { tail -20 cpack.log >&2; exit 1; }
    exec ctest --output-on-failure --timeout 600 ${SANIGATE_CTEST_ARGS:-}
    ;;
  build)
    install_packages
    build
    ;;
  fuzz)
    install_packages "${FUZZ_PACKAGES[@]}"
    fuzz "${2:-60}"
    ;;
  package)
    install_packages "${PACKAGE_PACKAGES[@]}"
    package
    ;;
  *)
    echo "usage: $0 demo|test|build|package|fuzz [SECONDS]" >&2
    exit 2
    ;;
esac
