#!/usr/bin/env bash
# The Debian package under a real systemd (issue 18): a longer test, outside the default run (not
# in ctest, not in .ci/run). It boots a throwaway Debian 12 container with systemd-nspawn, installs
# build/sanigate_*.deb there with apt (offline) and checks what install_test.sh can only emulate:
#   - the postinst enables and starts mosquitto, sanigate and sanifleet (`systemctl is-active`),
#     as dynamic users with their credential; `sanictl status` works as root;
#   - Restart=on-failure: a SIGKILLed daemon is started again;
#   - the watchdog: a daemon stopped with SIGSTOP stops pinging and systemd restarts it
#     (WatchdogSec= of the installed unit, read from systemd);
#   - reload with a bad config: `systemctl reload` keeps the running process (same MainPID) and
#     journalctl -u sanigate has the error; a restart with a bad config is refused by ExecStartPre;
#     the good config reloads (sanifleet: the refused and the good reload too);
#   - `systemctl stop` drains (SIGTERM, "flushing", "stopped", result success); `apt purge` removes.
#
# The root: debootstrap (--variant=minbase) of bookworm with systemd, dbus, mosquitto, procps and
# the libraries the .deb depends on (its Depends field), made once into a cache directory
# (SANIGATE_NSPAWN_CACHE, default /var/tmp/sanigate-nspawn-root; a few minutes and ~330 MB the
# first time, it needs the Debian mirror: SANIGATE_NSPAWN_MIRROR, default http://deb.debian.org/debian)
# and reused. Each run boots an overlayfs of it whose upper layer is a throwaway directory, so every
# run starts clean and the cache is never written by the container. The container has a private
# network (only its loopback, where everything talks). Commands run in it through nsenter into the
# namespaces of its PID 1 (this works whether or not the host runs systemd and machined).
#
# When the host is not booted with systemd (a CI sandbox), nspawn cannot ask systemd for a scope:
# it runs with --register=no --keep-unit in a cgroup this script makes (and removes) for it.
#
# Every wait has a timeout; the container is halted (SIGTERM to nspawn, then SIGKILL to it and the
# container's PID 1) and the overlay removed on exit, however the script ends (short of SIGKILL).
#
# usage: tests/package/nspawn_test.sh [BUILD_DIR]      (as root; BUILD_DIR defaults to build)
#        SANIGATE_DEB=path/to.deb overrides the package; SANIGATE_NSPAWN_HOLD=SECONDS keeps a failed
#        run's container that long (the nsenter command to look inside is printed).
# Exit 0: all checks passed. 1: a check failed. 77: cannot run here (not root, tools or package
# missing).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT_DIR=$(cd "$HERE/../.." && pwd)
BUILD=${1:-$ROOT_DIR/build}
CACHE=${SANIGATE_NSPAWN_CACHE:-/var/tmp/sanigate-nspawn-root}
MIRROR=${SANIGATE_NSPAWN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
MACHINE=sanigate-test-$$
START=$SECONDS
CHECKS=0

say() { printf -- '-- [%3ds] %s\n' "$((SECONDS - START))" "$*"; }
ok() { CHECKS=$((CHECKS + 1)); printf '   ok: %s\n' "$*"; }
skip() { echo "SKIP: $*"; exit 77; }

# ------------------------------------------------------------------ preconditions
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, overlayfs, systemd-nspawn): sudo $0 ${1:-}"
deb=${SANIGATE_DEB:-}
if [ -z "$deb" ]; then
  deb=$(ls -t "$BUILD"/sanigate_*.deb 2>/dev/null | head -n 1 || true)
fi
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
  skip "no ${SANIGATE_DEB:-$BUILD/sanigate_*.deb}: build it with ./sanigate.sh package (or: cd build && cpack -G DEB)"
fi
deb=$(readlink -f "$deb")
missing=
for tool in systemd-nspawn debootstrap nsenter dpkg-deb chroot flock mount umount timeout; do
  command -v "$tool" >/dev/null || missing="$missing $tool"
done
[ -z "$missing" ] || skip "missing:$missing (Debian: apt-get install -y debootstrap systemd-container)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || skip "the kernel has no overlayfs"

VERSION=$(dpkg-deb -f "$deb" Version)
UPSTREAM_VERSION=${VERSION%-*}
# The Depends field without versions or alternatives: the packages the cached root must have.
DEPS=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$' | sort -u | tr '\n' ' ')
# What a Debian 12 system has besides the minimal base: systemd as init, D-Bus, the broker and
# its clients, and procps (Priority: important, on every standard installation): the units'
# ExecReload= is /bin/kill, which is procps's, and the package does not depend on it.
BASE="systemd systemd-sysv dbus mosquitto-clients procps"
say "package: $deb (version $VERSION)"
say "depends: $DEPS"

# ------------------------------------------------------------------ the cached root
# Made once (debootstrap, then the package's dependencies with apt inside it: apt resolves virtual
# packages such as libspdlog1.10-fmt9 that debootstrap's --include cannot), topped up when the
# package depends on something new. A lock keeps two runs from building it at once.
ensure_cache() {
  exec 8>"$CACHE.lock"
  timeout 1800 flock 8 || { echo "FAIL: waited 30 min for $CACHE.lock"; exit 1; }
  if [ ! -e "$CACHE/.sanigate-nspawn-complete" ]; then
    say "making the Debian 12 root in $CACHE (debootstrap from $MIRROR; once, a few minutes)"
    rm -rf "$CACHE.new"
    if ! timeout 1800 debootstrap --variant=minbase --include="$(echo $BASE | tr ' ' ,)" \
        "$SUITE" "$CACHE.new" "$MIRROR" >"$CACHE.debootstrap.log" 2>&1; then
      echo "FAIL: debootstrap $SUITE $CACHE.new $MIRROR failed (log: $CACHE.debootstrap.log):"
      tail -n 15 "$CACHE.debootstrap.log"
      exit 1
    fi
    # No getty on the (passive) console; a fixed hostname; no machine-id (made at each boot).
    rm -f "$CACHE.new/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
    echo sanigate-test >"$CACHE.new/etc/hostname"
    : >"$CACHE.new/etc/machine-id"
    rm -rf "$CACHE"
    mv "$CACHE.new" "$CACHE"
    touch "$CACHE/.sanigate-nspawn-complete"
  fi
  # shellcheck disable=SC2086
  if chroot "$CACHE" apt-get -s -o Debug::NoLocking=1 install --no-install-recommends $BASE $DEPS 2>&1 | grep -q '^Inst '; then
    say "installing the package's new dependencies into $CACHE"
    # shellcheck disable=SC2086
    if ! { timeout 900 chroot "$CACHE" apt-get -q update &&
           DEBIAN_FRONTEND=noninteractive timeout 900 chroot "$CACHE" apt-get -q -y install --no-install-recommends $BASE $DEPS &&
           chroot "$CACHE" apt-get clean; } >"$CACHE.apt.log" 2>&1; then
      echo "FAIL: cannot install the dependencies into $CACHE (log: $CACHE.apt.log):"
      tail -n 15 "$CACHE.apt.log"
      exit 1
    fi
  fi
  flock -u 8
}
ensure_cache
ok "cached Debian 12 root $CACHE has: $BASE $DEPS"

# ------------------------------------------------------------------ the throwaway container
RUN=$(mktemp -d /var/tmp/sanigate-nspawn.XXXXXX)
MERGED=$RUN/merged
NSPAWN_PID=
LEADER=
CGROUPS=()
HOST_SYSTEMD=
[ -d /run/systemd/system ] && HOST_SYSTEMD=yes

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  set +e
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    # SIGTERM: nspawn asks the container's systemd to halt; SIGKILL after 30 s.
    kill -TERM "$NSPAWN_PID" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
      echo "note: the container did not halt in 30 s: killing it"
      [ -n "$LEADER" ] && kill -KILL "$LEADER" 2>/dev/null
      kill -KILL "$NSPAWN_PID" 2>/dev/null
    fi
    wait "$NSPAWN_PID" 2>/dev/null
  fi
  [ -n "$HOST_SYSTEMD" ] && command -v machinectl >/dev/null &&
    machinectl terminate "$MACHINE" >/dev/null 2>&1
  if mountpoint -q "$MERGED" 2>/dev/null; then
    umount "$MERGED" 2>/dev/null || umount -l "$MERGED"
  fi
  rm -rf --one-file-system "$RUN"
  rmdir "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null
  # The cgroups made for nspawn (and the payload/supervisor groups nspawn made below them).
  local cg d
  for cg in "${CGROUPS[@]}"; do
    [ -d "$cg" ] || continue
    find "$cg" -depth -type d 2>/dev/null | while read -r d; do rmdir "$d" 2>/dev/null; done
    [ -d "$cg" ] && echo "note: $cg still exists (a process left in it?)"
  done
  echo "nspawn test: $((SECONDS - START)) s, $CHECKS checks passed"
  if [ "$rc" -eq 0 ]; then echo "nspawn test ok"; else echo "nspawn test FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "FAIL: interrupted"; exit 1' INT TERM HUP

mkdir -p "$RUN/upper" "$RUN/work" "$MERGED"
mount -t overlay overlay -o "lowerdir=$CACHE,upperdir=$RUN/upper,workdir=$RUN/work" "$MERGED"
cp "$deb" "$MERGED/root/"
DEB_IN=/root/$(basename "$deb")

# Where nspawn runs. A host booted with systemd: the usual transient scope and machined
# registration. Otherwise a cgroup of our own in each hierarchy nspawn uses (it puts the container
# in "payload" and itself in "supervisor" below the cgroup it is started in).
NSPAWN_OPTS=(-q -b -D "$MERGED" --machine="$MACHINE" --private-network --console=passive
             --link-journal=no --timezone=off --resolv-conf=off)
if [ -z "$HOST_SYSTEMD" ]; then
  NSPAWN_OPTS+=(--register=no --keep-unit)
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    CGROUPS=("/sys/fs/cgroup/$MACHINE")
  else
    [ -d /sys/fs/cgroup/systemd ] && CGROUPS+=("/sys/fs/cgroup/systemd/$MACHINE")
    [ -d /sys/fs/cgroup/unified ] && CGROUPS+=("/sys/fs/cgroup/unified/$MACHINE")
  fi
  for cg in "${CGROUPS[@]}"; do
    mkdir "$cg" || { echo "FAIL: cannot make the cgroup $cg for the container (is the cgroup file system writable here?)"; exit 1; }
  done
fi
say "booting $MACHINE: systemd-nspawn ${NSPAWN_OPTS[*]}"
# shellcheck disable=SC2016
setsid bash -c 'for cg in "${@:2:$1}"; do echo $$ >"$cg/cgroup.procs" || exit 97; done; shift $(($1 + 1)); exec systemd-nspawn "$@"' \
  launcher "${#CGROUPS[@]}" "${CGROUPS[@]}" "${NSPAWN_OPTS[@]}" </dev/null >"$RUN/nspawn.log" 2>&1 &
NSPAWN_PID=$!

DUMP_FILES=()   # shown when a check fails
fail() {
  echo "FAIL: $*"
  local f
  for f in "${DUMP_FILES[@]}"; do [ -s "$f" ] && { echo "----- $f"; tail -n 30 "$f"; }; done
  if [ -s "$RUN/nspawn.log" ]; then echo "----- systemd-nspawn output (last 30 lines)"; tail -n 30 "$RUN/nspawn.log"; fi
  if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then
    echo "----- journal of the container (last 40 lines)"
    ct journalctl -q --no-pager -n 40 -o short-monotonic 2>/dev/null
    if [ -n "${SANIGATE_NSPAWN_HOLD:-}" ]; then
      echo "holding the container for ${SANIGATE_NSPAWN_HOLD}s: nsenter -t $LEADER -m -u -i -n -p -C -r -w bash"
      sleep "$SANIGATE_NSPAWN_HOLD" &
      wait $! || true   # (a signal ends the hold at once)
    fi
  fi
  exit 1
}

# The container's PID 1 as the host sees it: nspawn's descendant whose PID in its own namespace is 1.
find_leader() {
  local p
  for p in $(ps -o pid= --ppid "$NSPAWN_PID" 2>/dev/null) $(ps -e -o pid=,ppid= | awk -v n="$NSPAWN_PID" '$2 == n {print $1}'); do
    if awk '/^NSpid:/ {exit !($NF == 1 && NF > 2)}' "/proc/$p/status" 2>/dev/null; then echo "$p"; return 0; fi
    for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do
      if awk '/^NSpid:/ {exit !($NF == 1 && NF > 2)}' "/proc/$c/status" 2>/dev/null; then echo "$c"; return 0; fi
    done
  done
  return 1
}
for _ in $(seq 1 60); do
  kill -0 "$NSPAWN_PID" 2>/dev/null || { NSPAWN_PID=; fail "systemd-nspawn exited while booting"; }
  LEADER=$(find_leader) && break
  sleep 0.5
done
[ -n "$LEADER" ] || fail "no container PID 1 below systemd-nspawn (pid $NSPAWN_PID) in 30 s"

# A command in the container, as root, with a clean environment and a time limit (seconds).
ct_t() {
  local t=$1; shift
  timeout --kill-after=5 "$t" nsenter -t "$LEADER" -m -u -i -n -p -C -r -w -- \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 \
    DEBIAN_FRONTEND=noninteractive "$@"
}
ct() { ct_t 60 "$@"; }
# kill SIGNAL PID in the container (the shell's kill: a minimal root may have no /bin/kill).
ct_kill() { ct sh -c 'kill -s "$1" "$2"' sh "$@"; }

# wait_for SECONDS WHAT COMMAND...: polls COMMAND (on the host) every half second.
wait_for() {
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  while ! "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || fail "timed out after ${t}s waiting for $what"
    sleep 0.5
  done
}
expect_eq() {  # WHAT GOT WANT
  [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
  ok "$1: $2"
}
prop() { ct systemctl show -P "$2" "$1"; }   # UNIT PROPERTY
# The journal's current position (the cursor of its last entry).
cursor() {
  local c
  c=$(ct journalctl -q -n 1 -o cat --show-cursor | sed -n 's/^-- cursor: //p')
  [ -n "$c" ] || fail "journalctl --show-cursor printed no cursor"
  echo "$c"
}
# UNIT's journal from CURSOR on. --cursor (from the entry at CURSOR on), not --after-cursor:
# Debian 12's journalctl 252 with -u and --after-cursor skips the first matching entry after it.
journal_since() { ct journalctl -q --no-pager -o cat -u "$2" --cursor="$1"; }
# journal_has CURSOR UNIT TEXT: TEXT (fixed string) in UNIT's journal from CURSOR on.
journal_has() { journal_since "$@" | grep -qF -- "$3"; }
wait_journal() {  # SECONDS CURSOR UNIT TEXT
  wait_for "$1" "'$4' in journalctl -u $3" journal_has "$2" "$3" "$4"
  ok "journalctl -u $3: $(journal_since "$2" "$3" | grep -F -- "$4" | head -n 1)"
}
system_up() {
  local s
  s=$(ct_t 10 systemctl is-system-running 2>/dev/null) || true
  [ "$s" = running ] || [ "$s" = degraded ]
}

say "waiting for the container's systemd (is-system-running: running or degraded)"
wait_for 120 "systemd in the container to finish booting" system_up
state=$(ct systemctl is-system-running || true)
ok "container PID 1 is host pid $LEADER: $(ct cat /proc/1/comm) $(ct systemctl --version | head -n 1), system $state"
if [ "$state" = degraded ]; then
  echo "   note: failed units: $(ct systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
fi
expect_eq "mosquitto before the installation" "$(ct systemctl is-active mosquitto || true)" active

# ------------------------------------------------------------------ install
say "apt-get install $DEB_IN (offline: the dependencies are in the root)"
if ! ct_t 300 apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "$DEB_IN" >"$RUN/install.log" 2>&1; then
  tail -n 30 "$RUN/install.log"
  fail "apt-get install $DEB_IN failed"
fi
grep -E 'warning|Setting up sanigate' "$RUN/install.log" | sed 's/^/   | /'
expect_eq "dpkg status" "$(ct dpkg-query -W -f='${Status} ${Version}' sanigate)" "install ok installed $VERSION"

active3() { [ "$(ct systemctl is-active sanigate sanifleet mosquitto | tr '\n' ' ')" = "active active active " ]; }
wait_for 60 "sanigate, sanifleet and mosquitto to be active" active3
ok "systemctl is-active sanigate sanifleet mosquitto: $(ct systemctl is-active sanigate sanifleet mosquitto | tr '\n' ' ')"
expect_eq "systemctl is-enabled sanigate sanifleet" "$(ct systemctl is-enabled sanigate sanifleet | tr '\n' ' ')" "enabled enabled "
for u in sanigate sanifleet; do
  pid=$(prop $u MainPID)
  uid=$(ct stat -c %u "/proc/$pid")
  [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ] || fail "$u (pid $pid) runs as uid $uid, not a dynamic user"
  ok "$u: Type=$(prop $u Type), MainPID $pid, dynamic uid $uid, WatchdogUSec=$(prop $u WatchdogUSec), status \"$(prop $u StatusText)\""
  ct test -f "/run/credentials/$u.service/mqtt.password" || fail "no /run/credentials/$u.service/mqtt.password"
  expect_eq "$u: /run/credentials/$u.service/mqtt.password owner and mode" \
    "$(ct stat -c '%u %a' "/run/credentials/$u.service/mqtt.password")" "$uid 400"
  expect_eq "/var/lib/$u" "$(ct readlink "/var/lib/$u")" "private/$u"
done
ct journalctl -q --no-pager -o cat -u sanigate | grep -qF "sanigate $UPSTREAM_VERSION running with /etc/sanigate/sanigate.toml" ||
  fail "journalctl -u sanigate lacks 'sanigate $UPSTREAM_VERSION running with /etc/sanigate/sanigate.toml'"
ok "journalctl -u sanigate: sanigate $UPSTREAM_VERSION running with /etc/sanigate/sanigate.toml"
ct journalctl -q --no-pager -o cat -u sanifleet | grep -qF "sanifleet $UPSTREAM_VERSION running with /etc/sanigate/sanifleet.toml" ||
  fail "journalctl -u sanifleet lacks 'sanifleet $UPSTREAM_VERSION running with /etc/sanigate/sanifleet.toml'"
ok "journalctl -u sanifleet: sanifleet $UPSTREAM_VERSION running with /etc/sanigate/sanifleet.toml"

# ------------------------------------------------------------------ sanictl
say "sanictl status (as root, no flags)"
status_ok() {
  ct_t 20 sanictl status >"$RUN/status.out" 2>"$RUN/status.err" || return 1
  grep -Eq '^gw-[^ ]+ +yes ' "$RUN/status.out" && grep -Eq '^fleet ' "$RUN/status.out"
}
DUMP_FILES=("$RUN/status.out" "$RUN/status.err")
wait_for 45 "sanictl status to show the gateway online and the fleet" status_ok
DUMP_FILES=()
sed 's/^/   | /' "$RUN/status.out"
ok "sanictl status: the gateway is online and sanifleet answers"

# ------------------------------------------------------------------ Restart=on-failure
say "Restart=on-failure: kill -9 sanigate's main process"
p0=$(prop sanigate MainPID); n0=$(prop sanigate NRestarts); c=$(cursor)
ct_kill KILL "$p0"
restarted() {  # UNIT OLDPID OLDCOUNT
  local p n
  p=$(prop "$1" MainPID); n=$(prop "$1" NRestarts)
  [ "$p" != 0 ] && [ "$p" != "$2" ] && [ "$n" -gt "$3" ] && [ "$(ct systemctl is-active "$1")" = active ]
}
wait_for 60 "sanigate to be restarted after SIGKILL" restarted sanigate "$p0" "$n0"
ok "sanigate restarted: MainPID $p0 -> $(prop sanigate MainPID), NRestarts $n0 -> $(prop sanigate NRestarts)"
wait_journal 10 "$c" sanigate "status=9/KILL"
wait_journal 10 "$c" sanigate "Scheduled restart job"

# ------------------------------------------------------------------ the watchdog
wd_us=$(prop sanigate WatchdogUSec)
case "$wd_us" in
  *min*) wd_s=$(( ${wd_us%%min*} * 60 )) ;;
  *ms) wd_s=1 ;;
  *s) wd_s=${wd_us%s} ;;
  *) wd_s=0 ;;
esac
[ "${wd_s:-0}" -gt 0 ] || fail "sanigate.service has no watchdog (WatchdogUSec=$wd_us)"
abort_s=$(prop sanigate TimeoutAbortUSec); abort_s=${abort_s%s}; [[ "$abort_s" =~ ^[0-9]+$ ]] || abort_s=15
limit=$((wd_s + abort_s + 45))
say "the watchdog: kill -STOP sanigate's main process (WatchdogSec=$wd_us: restarted within ${limit}s)"
p0=$(prop sanigate MainPID); n0=$(prop sanigate NRestarts); c=$(cursor)
ct_kill STOP "$p0"
t0=$SECONDS
wait_for "$limit" "the watchdog to restart the stopped sanigate" restarted sanigate "$p0" "$n0"
ok "sanigate restarted by the watchdog after $((SECONDS - t0)) s: MainPID $p0 -> $(prop sanigate MainPID), NRestarts $n0 -> $(prop sanigate NRestarts)"
wait_journal 10 "$c" sanigate "Watchdog timeout"
wait_journal 10 "$c" sanigate "Failed with result 'watchdog'"
ct_kill 0 "$p0" 2>/dev/null && fail "the stopped process $p0 is still there"
ok "the stopped process $p0 is gone"

# ------------------------------------------------------------------ reload with a bad config
say "reload with a bad config: the running process stays"
ct cp -p /etc/sanigate/sanigate.toml /root/sanigate.toml.good
ct sh -c 'printf "\n[gateway\nthis is not toml = = \n" >>/etc/sanigate/sanigate.toml'
p0=$(prop sanigate MainPID); c=$(cursor)
ct systemctl reload sanigate || fail "systemctl reload sanigate exited $?"
wait_journal 20 "$c" sanigate "reload refused, keeping the running config"
journal_since "$c" sanigate | grep -A3 -F "reload refused" | sed 's/^/   | /'
idle() { [ "$(ct systemctl is-active sanigate)" = active ]; }
wait_for 20 "sanigate to be active again after the refused reload" idle
expect_eq "MainPID after the refused reload" "$(prop sanigate MainPID)" "$p0"
ok "status after the refused reload: \"$(prop sanigate StatusText)\""

say "restart with the bad config: ExecStartPre refuses it"
c=$(cursor)
if ct_t 90 systemctl restart sanigate 2>/dev/null; then fail "systemctl restart sanigate succeeded with a bad config"; fi
# Restart=on-failure may try again (and fail again) until the start limit: never active.
st=$(ct systemctl is-active sanigate || true)
case "$st" in failed | activating) ok "systemctl restart sanigate failed; sanigate is $st, Result=$(prop sanigate Result)" ;;
  *) fail "sanigate is $st after a restart with a bad config" ;; esac
journal_since "$c" sanigate | grep -iE 'error|invalid|expected' | head -n 3 | sed 's/^/   | /'
journal_has "$c" sanigate "Control process exited, code=exited" || fail "no ExecStartPre failure in journalctl -u sanigate"
ok "journalctl -u sanigate: ExecStartPre (sanigate --check-config) failed"

say "the good config back: start, reload"
ct cp -p /root/sanigate.toml.good /etc/sanigate/sanigate.toml
ct_t 30 systemctl stop sanigate   # ends a pending automatic restart
ct systemctl reset-failed sanigate
ct_t 90 systemctl start sanigate || fail "systemctl start sanigate with the good config failed"
expect_eq "sanigate" "$(ct systemctl is-active sanigate)" active
p0=$(prop sanigate MainPID); c=$(cursor)
ct systemctl reload sanigate || fail "systemctl reload sanigate exited $?"
wait_journal 20 "$c" sanigate "reloaded /etc/sanigate/sanigate.toml"
wait_for 20 "sanigate to be active after the reload" idle
expect_eq "MainPID after the reload" "$(prop sanigate MainPID)" "$p0"
wait_for 45 "sanictl status after the restarts" status_ok
ok "sanictl status: the gateway is online again"

say "sanifleet: reload with a bad config keeps the running process too"
ct cp -p /etc/sanigate/sanifleet.toml /root/sanifleet.toml.good
ct sh -c 'printf "\n[fleet\n" >>/etc/sanigate/sanifleet.toml'
p0=$(prop sanifleet MainPID); c=$(cursor)
ct systemctl reload sanifleet || fail "systemctl reload sanifleet exited $?"
wait_journal 20 "$c" sanifleet "reload refused, keeping the running config"
fleet_idle() { [ "$(ct systemctl is-active sanifleet)" = active ]; }
wait_for 20 "sanifleet to be active again after the refused reload" fleet_idle
expect_eq "sanifleet MainPID after the refused reload" "$(prop sanifleet MainPID)" "$p0"
ct cp -p /root/sanifleet.toml.good /etc/sanigate/sanifleet.toml
c=$(cursor)
ct systemctl reload sanifleet || fail "systemctl reload sanifleet exited $?"
# sanifleet logs what its reload changed; its status (sd_notify STATUS=) says it reloaded.
fleet_reloaded() { [ "$(prop sanifleet StatusText)" = "running with /etc/sanigate/sanifleet.toml (reloaded)" ]; }
wait_for 20 "sanifleet's status to say it reloaded" fleet_reloaded
ok "sanifleet status after the reload: \"$(prop sanifleet StatusText)\""
expect_eq "sanifleet MainPID after the reload" "$(prop sanifleet MainPID)" "$p0"

# ------------------------------------------------------------------ stop drains
say "systemctl stop: SIGTERM, the outbox is flushed, a clean exit"
c=$(cursor)
ct_t 60 systemctl stop sanigate sanifleet || fail "systemctl stop failed"
for u in sanigate sanifleet; do
  expect_eq "$u after stop" "$(ct systemctl is-active $u || true)" inactive
  expect_eq "$u Result" "$(prop $u Result)" success
  wait_journal 10 "$c" $u "SIGTERM: flushing and stopping"
  wait_journal 10 "$c" $u " stopped"
done

# ------------------------------------------------------------------ purge
say "apt-get purge sanigate"
if ! ct_t 300 apt-get purge -y -o Dpkg::Use-Pty=0 sanigate >"$RUN/purge.log" 2>&1; then
  tail -n 30 "$RUN/purge.log"
  fail "apt-get purge sanigate failed"
fi
expect_eq "dpkg status after purge" "$(ct dpkg-query -W -f='${Status}' sanigate 2>/dev/null || echo absent)" "absent"
for p in /usr/bin/sanigate /usr/bin/sanifleet /usr/bin/sanictl /lib/systemd/system/sanigate.service \
         /etc/sanigate /etc/mosquitto/conf.d/sanigate.conf /var/lib/private/sanigate /var/lib/private/sanifleet; do
  ct test -e "$p" && fail "$p is still there after purge"
done
ok "binaries, units, /etc/sanigate, the broker drop-in and the state are gone"
expect_eq "sanigate.service LoadState" "$(prop sanigate LoadState)" not-found
mosquitto_active() { [ "$(ct systemctl is-active mosquitto)" = active ]; }
wait_for 30 "mosquitto to be active after purge" mosquitto_active
ok "mosquitto is still active (restarted without the drop-in)"
failed=$(ct systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')
[ -z "$failed" ] || echo "   note: failed units in the container: $failed"
say "all checks passed"
