#!/usr/bin/env bash
# Installs the Debian package for real, in a throwaway root, and runs it (issue 18): dpkg -i, the
# postinst's users, passwords, owners and modes, both daemons started as their units would start
# them, data from a simulated Modbus device seen with `sanictl status` and mosquitto_sub, an
# upgrade to a rebuilt package while the broker is down and records wait in the outbox (every one
# arrives afterwards, the operator's config is kept), then purge, and remove on a fresh install.
#
# The throwaway root: the script re-runs itself in new mount, PID and network namespaces
# (unshare). There, /etc, /usr and /var are overlayfs mounts whose upper layers live on a tmpfs,
# /run is an empty tmpfs (so no systemd is visible and the maintainer scripts take their
# no-systemd path), and the network namespace has its own loopback, where the installed configs'
# port 1883 is free. Whatever dpkg, the maintainer scripts and the daemons write goes to the tmpfs
# and is gone when the namespace's last process exits; the PID namespace makes sure that happens
# when the script ends, however it ends. The host's own /etc, /usr, /var and dpkg database are
# never written (checked at the end).
#
# Without systemd the units are emulated from the installed unit files: ExecStartPre and
# ExecStart run as a dynamic user id (DynamicUser=) with the unit's supplementary groups, umask
# and file limit, no capabilities and no_new_privs, in a mount namespace of their own with every
# file system read-only (ProtectSystem=strict) except the state directory, which lives in
# /var/lib/private/NAME behind the /var/lib/NAME link as systemd makes it, a private /tmp, the
# LoadCredential= files copied to /run/credentials/UNIT/ (0400, owned by the service's user: what
# Debian 12's systemd 252 does on its ramfs; a systemd that puts credentials on tmpfs grants read
# access with an ACL instead), and a notification socket that must receive READY=1 within
# TimeoutStartSec (Type=notify) and STOPPING=1 on SIGTERM. Mosquitto is started as its Debian
# unit starts it (/etc/mosquitto/mosquitto.conf with the package's drop-in).
#
# usage: install_test.sh BUILD_DIR VERSION [MODBUS_SIM]   (or SANIGATE_DEB=path/to.deb)
# MODBUS_SIM defaults to BUILD_DIR/tests/sim/modbus_sim.
# Exit 77 (ctest: skipped) when there is no package for VERSION in BUILD_DIR or when not root.
set -euo pipefail

if [ "${1:-}" != --inside ]; then
  BUILD=${1:?usage: install_test.sh BUILD_DIR VERSION}
  VERSION=${2:?version}
  deb=${SANIGATE_DEB:-}
  if [ -z "$deb" ]; then
    deb=$(ls -t "$BUILD"/sanigate_"$VERSION"-*_*.deb 2>/dev/null | head -n 1 || true)
  fi
  if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    echo "SKIP: no $BUILD/sanigate_$VERSION-*.deb: build it with cpack -G DEB (or ./sanigate.sh package)"
    exit 77
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: the install test needs root (mount namespaces, overlayfs, dpkg); CI runs it as root"
    exit 77
  fi
  missing=
  for tool in unshare setpriv findmnt ip pgrep dpkg dpkg-deb dpkg-query mosquitto mosquitto_sub mosquitto_pub python3; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing="$missing $tool"
  done
  [ -z "$missing" ] || { echo "FAIL: the install test needs:$missing"; exit 1; }
  sim=${3:-$BUILD/tests/sim/modbus_sim}
  [ -x "$sim" ] || { echo "FAIL: no $sim (the test build's Modbus simulator)"; exit 1; }

  host_status=$(dpkg-query -W -f='${Status}' sanigate 2>/dev/null || true)
  case "$host_status" in
    "" | *" not-installed") ;;
    *) echo "SKIP: sanigate is known to dpkg on this machine ($host_status); the install test needs a system without it"
       exit 77 ;;
  esac
  if ! err=$(unshare --mount --propagation private --pid --fork --net -- true 2>&1); then
    echo "FAIL: cannot make private mount, PID and network namespaces here ($err): the package cannot be installed in a throwaway root, so it is not installed at all"
    exit 1
  fi
  echo "package: $deb"
  # What the host looks like before, to show afterwards that nothing changed.
  host_state() {
    printf 'dpkg: %s\n' "$(dpkg-query -W -f='${Status} ${Version}' sanigate 2>/dev/null || echo absent)"
    for p in /etc/sanigate /etc/mosquitto/conf.d/sanigate.conf /usr/bin/sanigate /lib/systemd/system/sanigate.service \
             /var/lib/sanigate /var/lib/sanifleet /var/lib/private/sanigate /var/lib/private/sanifleet; do
      if [ -e "$p" ] || [ -L "$p" ]; then echo "$p: $(stat -c '%F %U:%G %a %Y' "$p")"; else echo "$p: absent"; fi
    done
  }
  before=$(host_state)
  T=$(mktemp -d /tmp/sanigate-install.XXXXXX)
  canary=/etc/.sanigate-install-test.$(basename "$T")
  start=$SECONDS
  rc=0
  # --kill-child: if this script is killed (ctest's timeout), the namespace's init dies with it,
  # and with it every process of the PID namespace.
  unshare --mount --propagation private --pid --fork --kill-child --mount-proc --net -- \
    bash "$0" --inside "$T" "$deb" "$sim" "$(readlink /proc/self/ns/mnt)" "$canary" &
  child=$!
  # A signal to this script (ctest's timeout, Ctrl-C) ends unshare (SIGKILL: it blocks SIGTERM
  # and SIGINT while it waits), whose --kill-child ends the namespace's init and so every
  # process in it; then the host is checked as usual.
  interrupted=
  trap 'interrupted=yes; kill -KILL "$child" 2>/dev/null || true' TERM INT HUP
  while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  trap - TERM INT HUP
  if [ -n "$interrupted" ]; then
    echo "FAIL: interrupted; every process of the throwaway root was killed"
    rc=1
  fi
  after=$(host_state)
  if [ "$before" != "$after" ]; then
    echo "FAIL: the host changed (the install was not throwaway):"
    diff <(echo "$before") <(echo "$after") || true
    rc=1
  fi
  if [ -e "$canary" ]; then
    echo "FAIL: $canary, written inside the throwaway root, is on the host"
    rc=1
  fi
  # Only the empty mount point remains on the host (the tmpfs lived in the namespace).
  rmdir "$T" 2>/dev/null || { echo "note: $T was not empty on the host: $(ls -A "$T" | head)"; rm -rf "$T"; }
  echo "install test: $((SECONDS - start)) s, host unchanged: $([ "$before" = "$after" ] && echo yes || echo NO)"
  [ "$rc" -eq 0 ] && echo "install test ok"
  exit "$rc"
fi

# ============================== inside the namespaces ==============================
T=$2
DEB_ORIG=$3
SIM=$4
HOST_MNT_NS=$5
CANARY=$6
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 NO_COLOR=1

LOGS=$T/logs
declare -A PIDS=()   # name -> pid of everything started here
RUNS=0

say() { printf '%s [%3ds] %s\n' "--" "$SECONDS" "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
dump_logs() {
  for f in "$LOGS"/*.log /var/log/mosquitto/mosquitto.log; do
    [ -s "$f" ] || continue
    echo "----- $(basename "$f") (last 25 lines)"
    tail -n 25 "$f"
  done
}
die() {
  echo "FAIL: $*"
  dump_logs
  exit 1
}
# Prints the answer of a check and dies when it is wrong.
expect_eq() {  # WHAT GOT WANT
  [ "$2" = "$3" ] || die "$1: got '$2', expected '$3'"
  ok "$1: $2"
}

alive() {  # PID: running and not a zombie
  [ -r "/proc/$1/stat" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
listening_or_dead() {  # PORT PID
  (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null || ! alive "$2"
}
# Waits up to SECONDS for COMMAND to succeed.
wait_for() {  # SECONDS WHAT COMMAND...
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${limit}s waiting for $what"
    sleep 0.2
  done
}
# SIGTERM, then up to SECONDS for the process to exit (SIGKILL and failure after that). The exit
# status is left in STOPPED_RC.
stop() {  # NAME SECONDS
  local name=$1 limit=$2 pid=${PIDS[$1]:-} deadline
  STOPPED_RC=0
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + limit))
  while alive "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      unset "PIDS[$name]"
      die "$name (pid $pid) did not exit within ${limit}s of SIGTERM"
    fi
    sleep 0.1
  done
  wait "$pid" 2>/dev/null || STOPPED_RC=$?
  unset "PIDS[$name]"
}
cleanup() {
  local name
  for name in "${!PIDS[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null || true; done
  sleep 0.5
  for name in "${!PIDS[@]}"; do kill -KILL "${PIDS[$name]}" 2>/dev/null || true; done
}
trap cleanup EXIT

# ---------------------------------------------------------------- the throwaway root
say "throwaway root: overlayfs over /etc /usr /var, tmpfs /run, private network"
[ "$(readlink /proc/self/ns/mnt)" != "$HOST_MNT_NS" ] || die "not in a private mount namespace: refusing to install"
mount -t tmpfs -o mode=0700,size=2g tmpfs "$T" || die "cannot mount a tmpfs on $T"
mkdir -p "$LOGS" "$T/tmp" "$T/bind"
export TMPDIR=$T/tmp
for d in etc usr var; do
  mkdir -p "$T/ovl/$d/up" "$T/ovl/$d/work"
  opts="lowerdir=/$d,upperdir=$T/ovl/$d/up,workdir=$T/ovl/$d/work"
  # Real root in the initial user namespace needs no userxattr; a user namespace would.
  if ! mount -t overlay overlay -o "$opts" "/$d" 2>"$T/ovl-$d.err" &&
     ! mount -t overlay overlay -o "$opts,userxattr" "/$d" 2>>"$T/ovl-$d.err"; then
    die "overlayfs over /$d does not work here ($(tr '\n' ' ' <"$T/ovl-$d.err")): the package cannot be installed in a throwaway root, so it is not installed at all"
  fi
  [ "$(findmnt -n -o FSTYPE --mountpoint "/$d")" = overlay ] || die "/$d is not an overlay after mounting one"
done
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
[ ! -d /run/systemd/system ] || die "/run/systemd/system is visible: the maintainer scripts would talk to the host's systemd"
touch "$CANARY"
ip link set lo up
ok "every write to /etc /usr /var /run lands on a tmpfs that vanishes with the namespace"
# The package may be rebuilt by someone else while this runs: work on a copy.
DEB=$T/$(basename "$DEB_ORIG")
cp "$DEB_ORIG" "$DEB"
V1=$(dpkg-deb -f "$DEB" Version)
# man-db's trigger rebuilds its index after every dpkg run (seconds each): not what is tested.
if command -v debconf-set-selections >/dev/null; then
  echo 'man-db man-db/auto-update boolean false' | debconf-set-selections 2>/dev/null || true
fi

# ---------------------------------------------------------------- helpers on the installed system
UNITDIR=/lib/systemd/system
declare -A DYN_UID=([sanigate]=61812 [sanifleet]=61813)   # in systemd's DynamicUser range
CAPTURE=$T/capture.txt

# The value(s) of KEY in a unit file, one per line.
unit_values() { sed -n "s/^$2=//p" "$UNITDIR/$1.service"; }
unit_value() { unit_values "$1" "$2" | tail -n 1; }

# Runs COMMAND... as the unit NAME would run it (see the header). Used for ExecStartPre and
# ExecStart alike; the caller decides foreground or background.
SANDBOX='
set -e
name=$1 uid=$2 groups=$3 um=$4 nofile=$5 states=$6 T=$7 notify=$8
shift 8
for sd in $states; do
  mkdir -p "$T/bind/$name/$sd"
  mount --bind "/var/lib/private/$sd" "$T/bind/$name/$sd"
done
# ProtectSystem=strict: every mount read-only (per mount, bind remounts: this namespace only).
findmnt -rn -o TARGET,FSTYPE | while read -r target fstype; do
  case "$target" in /proc*|/sys*|/dev*) continue ;; esac
  [ "$fstype" = nsfs ] && continue
  mount -o remount,bind,ro "$target" 2>/dev/null || true
done
for m in / /etc /usr /var; do
  case "$(findmnt -n -o OPTIONS --mountpoint "$m")" in ro,* | ro) ;; *) echo "sandbox: $m is not read-only" >&2; exit 1 ;; esac
done
# DynamicUser=: /var/lib/private stays 0700 root on the host; the service sees its own directory
# through a tmpfs over it.
if [ -n "$states" ]; then
  mount -t tmpfs -o mode=0755 tmpfs /var/lib/private
  for sd in $states; do
    mkdir "/var/lib/private/$sd"
    mount --bind "$T/bind/$name/$sd" "/var/lib/private/$sd"
    mount -o remount,bind,rw "/var/lib/private/$sd"
  done
fi
# PrivateTmp=
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
umask "$um"
# LimitNOFILE= (systemd raises the hard limit; without CAP_SYS_RESOURCE this cannot).
if ! ulimit -n "$nofile" 2>/dev/null; then
  echo "sandbox: note: LimitNOFILE=$nofile above the hard limit $(ulimit -Hn) without CAP_SYS_RESOURCE: $(ulimit -Hn) used" >&2
  ulimit -n "$(ulimit -Hn)"
fi
if [ -n "$groups" ]; then grp="--groups=$groups"; else grp=--clear-groups; fi
exec setpriv --reuid="$uid" --regid="$uid" "$grp" --no-new-privs --inh-caps=-all --bounding-set=-all -- \
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin LANG=C.UTF-8 HOME=/ USER="$name" \
  LOGNAME="$name" CREDENTIALS_DIRECTORY="/run/credentials/$name.service" ${notify:+NOTIFY_SOCKET=$notify} \
  STATE_DIRECTORY="${states:+/var/lib/$states}" CONFIGURATION_DIRECTORY=/etc/sanigate "$@"
'

# Prepares what systemd prepares before starting UNIT: the dynamic user's state directory and
# the credentials. Sets U_UID U_GROUPS U_UMASK U_NOFILE U_STATES.
prepare_unit() {  # UNIT
  local u=$1 line id path dir mode g gid
  [ -f "$UNITDIR/$u.service" ] || die "no $UNITDIR/$u.service installed"
  [ "$(unit_value "$u" DynamicUser)" = yes ] || die "$u.service: the test emulates DynamicUser=yes only"
  U_UID=${DYN_UID[$u]}
  ! getent passwd "$U_UID" >/dev/null || die "uid $U_UID is taken: pick another for $u"
  U_GROUPS=
  for g in $(unit_values "$u" SupplementaryGroups); do
    gid=$(getent group "$g" | cut -d: -f3) || die "$u.service: no group $g"
    U_GROUPS=${U_GROUPS:+$U_GROUPS,}$gid
  done
  U_UMASK=$(unit_value "$u" UMask)
  U_UMASK=${U_UMASK:-0022}
  U_NOFILE=$(unit_value "$u" LimitNOFILE)
  U_NOFILE=${U_NOFILE:-1024}
  U_STATES=$(unit_value "$u" StateDirectory)
  mode=$(unit_value "$u" StateDirectoryMode)
  mode=${mode:-0755}
  for dir in $U_STATES; do
    mkdir -p /var/lib/private
    chmod 0700 /var/lib/private
    mkdir -p "/var/lib/private/$dir"
    chown -R "$U_UID:$U_UID" "/var/lib/private/$dir"
    chmod "$mode" "/var/lib/private/$dir"
    [ -L "/var/lib/$dir" ] || ln -s "private/$dir" "/var/lib/$dir"
  done
  dir=/run/credentials/$u.service
  rm -rf "$dir"
  mkdir -p "$dir"
  while IFS= read -r line; do
    id=${line%%:*}
    path=${line#*:}
    [ -r "$path" ] || die "$u.service: LoadCredential=$line: $path does not exist (systemd would refuse to start it)"
    cp "$path" "$dir/$id"
    chown "$U_UID:$U_UID" "$dir/$id"
    chmod 0400 "$dir/$id"
  done < <(unit_values "$u" LoadCredential)
  chown "$U_UID:$U_UID" "$dir"
  chmod 0500 "$dir"
}

notified() {  # UNIT READY_COUNT_BEFORE PID: a new READY=1, or the process is gone
  [ "$(grep -c "^$1: READY=1" "$NOTIFY_LOG")" -gt "$2" ] || ! alive "$3"
}

# Replaces the calling (sub)shell: run it as `( sandboxed UNIT NOTIFY CMD... )`, so that in the
# background $! is the daemon's own pid (unshare, bash, setpriv and env each exec the next).
sandboxed() {  # UNIT NOTIFY_SOCKET|"" COMMAND...
  local u=$1 notify=$2
  shift 2
  exec unshare --mount --propagation private -- bash -c "$SANDBOX" sandbox \
    "$u" "$U_UID" "$U_GROUPS" "$U_UMASK" "$U_NOFILE" "$U_STATES" "$T" "$notify" "$@"
}

# Starts UNIT the way systemd would: ExecStartPre (must succeed), then ExecStart in the background.
start_unit() {  # UNIT
  local u=$1 line
  local -a cmd
  prepare_unit "$u"
  RUNS=$((RUNS + 1))
  local log=$LOGS/$u.$RUNS.log
  while IFS= read -r line; do
    case "$line" in *'$'* | *%*) die "$u.service: '$line' uses variables or specifiers the test does not expand" ;; esac
    read -ra cmd <<<"$line"
    (sandboxed "$u" "" "${cmd[@]}") >>"$log" 2>&1 || die "$u.service: ExecStartPre=$line failed: $(tail -n 5 "$log")"
  done < <(unit_values "$u" ExecStartPre)
  line=$(unit_value "$u" ExecStart)
  case "$line" in *'$'* | *%*) die "$u.service: '$line' uses variables or specifiers the test does not expand" ;; esac
  read -ra cmd <<<"$line"
  local notify='' readies=0 limit
  if [ "$(unit_value "$u" Type)" = notify ]; then
    notify=$NOTIFY_DIR/$u.sock
    readies=$(grep -c "^$u: READY=1" "$NOTIFY_LOG" || true)
  fi
  (sandboxed "$u" "$notify" "${cmd[@]}") >>"$log" 2>&1 &
  local pid=$!
  PIDS[$u]=$pid
  if [ -n "$notify" ]; then
    # Type=notify: systemd waits TimeoutStartSec for READY=1 from the main process.
    limit=$(unit_value "$u" TimeoutStartSec)
    limit=${limit:-90}
    wait_for "$limit" "READY=1 from $u (Type=notify, TimeoutStartSec=$limit)" notified "$u" "$readies" "$pid"
  else
    sleep 0.3
  fi
  alive "$pid" || die "$u exited at start: $(tail -n 5 "$log")"
  [ "$(readlink "/proc/$pid/exe")" = "${cmd[0]}" ] || die "pid $pid is not $u but $(readlink "/proc/$pid/exe")"
  [ "$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")" = "$U_UID" ] || die "$u does not run as uid $U_UID"
  grep -q '^CapEff:[[:space:]]*0*$' "/proc/$pid/status" || die "$u has capabilities"
  ok "$u running as uid $U_UID without capabilities (pid $pid)${notify:+, READY=1 received}: ${cmd[*]}"
}

# SIGTERM as systemd's stop (KillSignal=SIGTERM) within TimeoutStopSec; the credentials go away.
stop_unit() {  # UNIT
  local u=$1 t stoppings
  stoppings=$(grep -c "^$u: STOPPING=1" "$NOTIFY_LOG" || true)
  t=$(unit_value "$u" TimeoutStopSec)
  stop "$u" "${t:-90}"
  wait_for 2 "STOPPING=1 from $u on SIGTERM" bash -c "[ \"\$(grep -c '^$u: STOPPING=1' '$NOTIFY_LOG')\" -gt $stoppings ]"
  [ "$STOPPED_RC" -eq 0 ] || die "$u exited with status $STOPPED_RC on SIGTERM"
  rm -rf "/run/credentials/$u.service"
  [ -z "$(pgrep -x "$u" || true)" ] || die "a $u process is left after stopping the unit: $(pgrep -a -x "$u")"
  ok "$u stopped by SIGTERM (STOPPING=1 sent), exit 0"
}

# Mosquitto as Debian's mosquitto.service starts it (ExecStartPre, then ExecStart).
start_broker() {
  local unit=$UNITDIR/mosquitto.service line
  local -a cmd
  RUNS=$((RUNS + 1))
  if [ -f "$unit" ]; then
    while IFS= read -r line; do
      read -ra cmd <<<"$line"
      "${cmd[@]}" || die "mosquitto.service: ExecStartPre=$line failed"
    done < <(sed -n 's/^ExecStartPre=//p' "$unit")
    line=$(sed -n 's/^ExecStart=//p' "$unit" | tail -n 1)
  else
    mkdir -p /var/log/mosquitto /run/mosquitto
    chmod 740 /var/log/mosquitto /run/mosquitto
    chown mosquitto /var/log/mosquitto /run/mosquitto
    line="/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf"
  fi
  read -ra cmd <<<"$line"
  "${cmd[@]}" >>"$LOGS/mosquitto.$RUNS.log" 2>&1 &
  PIDS[mosquitto]=$!
  wait_for 15 "mosquitto to listen on 127.0.0.1:1883" listening_or_dead 1883 "${PIDS[mosquitto]}"
  alive "${PIDS[mosquitto]}" || die "mosquitto exited at start"
  ok "mosquitto listens on 127.0.0.1:1883 (pid ${PIDS[mosquitto]}): $line"
}
stop_broker() {
  stop mosquitto 15
  ok "mosquitto stopped"
}

# A persistent (clean session off) QoS 1 subscriber as the admin user: it keeps running across
# broker restarts and the broker keeps its session (persistence), so nothing published while it
# is away is missed.
start_capture() {
  mosquitto_sub -h 127.0.0.1 -p 1883 -u admin -P "$(head -n 1 /etc/sanigate/credentials/admin.password)" \
    -i install-test-capture -c -q 1 -v \
    -t 'sanigate/v1/houpu/devices/+/telemetry' -t 'sanigate/v1/houpu/gateway/+/status' \
    -t 'sanigate/v1/houpu/fleet/status' >>"$CAPTURE" 2>>"$LOGS/capture.log" &
  PIDS[capture]=$!
}

# Small JSON jobs in Python: record ids in the capture and in an outbox file, the metrics endpoint.
TOOL=$T/tool.py
cat >"$TOOL" <<'EOF'
import json, sqlite3, sys, urllib.request

def captured(path, device="room-07"):
    """(id, seq, reads) of the device's telemetry in capture order, duplicates included."""
    out = []
    for line in open(path, encoding="utf-8", errors="replace"):
        topic, _, payload = line.rstrip("\n").partition(" ")
        if topic != f"sanigate/v1/houpu/devices/{device}/telemetry":
            continue
        try:
            p = json.loads(payload)
        except ValueError:
            continue
        rid = p.get("id", "")
        out.append((rid, int(rid.rpartition(":")[2]), p.get("metrics", {}).get("reads")))
    return out

cmd = sys.argv[1]
if cmd == "count":  # CAPTURE: distinct telemetry records of room-07
    print(len({r[0] for r in captured(sys.argv[2])}))
elif cmd == "online":  # CAPTURE TOPIC: the last message on TOPIC says online:true
    last = None
    for line in open(sys.argv[2], encoding="utf-8", errors="replace"):
        topic, _, payload = line.rstrip("\n").partition(" ")
        if topic == sys.argv[3]:
            last = payload
    sys.exit(0 if last and json.loads(last).get("online") is True else 1)
elif cmd == "metric":  # NAME: its value on sanigate's metrics endpoint
    text = urllib.request.urlopen("http://127.0.0.1:9187/metrics", timeout=2).read().decode()
    for line in text.splitlines():
        if line.split(" ")[0] == sys.argv[2]:
            print(int(float(line.split(" ")[1])))
            break
    else:
        sys.exit(1)
elif cmd == "notify":  # DIR LOG UNIT...: systemd's notification sockets, one per unit
    import os, select, socket
    socks = {}
    for unit in sys.argv[4:]:
        path = os.path.join(sys.argv[2], unit + ".sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        os.chmod(path, 0o777)
        socks[s] = unit
    with open(sys.argv[3], "a", buffering=1) as log:
        while True:
            for s in select.select(list(socks), [], [])[0]:
                msg = s.recv(4096).decode(errors="replace")
                log.write(f"{socks[s]}: {' '.join(msg.split(chr(10)))}\n")
elif cmd == "outbox":  # DB [live]: ids of the telemetry records in the outbox, oldest first
    # live: the running daemon's file, opened read-only (WAL: readers do not disturb the writer).
    db = sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True) if sys.argv[3:] == ["live"] else sqlite3.connect(sys.argv[2])
    for (payload,) in db.execute("SELECT payload FROM outbox WHERE topic LIKE '%/telemetry' ORDER BY seq"):
        print(json.loads(payload)["id"])
elif cmd == "all-arrived":  # CAPTURE IDS_FILE: every id of the file was captured
    have = {r[0] for r in captured(sys.argv[2])}
    want = [l.strip() for l in open(sys.argv[3]) if l.strip()]
    missing = [i for i in want if i not in have]
    if missing:
        print(f"{len(missing)} of {len(want)} not yet arrived, first {missing[0]}")
        sys.exit(1)
elif cmd == "verify":  # CAPTURE IDS_FILE LAST_PRE_UPGRADE_SEQ: order, gaps, counters
    recs = captured(sys.argv[2])
    want = [l.strip() for l in open(sys.argv[3]) if l.strip()]
    last_pre = int(sys.argv[4])
    seen, firsts = set(), []
    for r in recs:
        if r[0] not in seen:
            seen.add(r[0])
            firsts.append(r)
    dups = len(recs) - len(firsts)
    seqs = [r[1] for r in firsts]
    bad_order = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
    if bad_order:
        print(f"records out of order (first occurrences): seq {bad_order[0][0]} then {bad_order[0][1]}")
        sys.exit(1)
    missing = [i for i in want if i not in seen]
    if missing:
        print(f"lost: {len(missing)} outbox records never arrived, first {missing[0]}")
        sys.exit(1)
    after = [r for r in firsts if r[1] > last_pre]
    if not after:
        print("no record read after the upgrade arrived")
        sys.exit(1)
    reads = [r[2] for r in firsts if isinstance(r[2], (int, float))]
    gaps = sum(1 for a, b in zip(reads, reads[1:]) if b != a + 1)
    print(f"{len(firsts)} records (+{dups} duplicates), seq {seqs[0]}..{seqs[-1]}; the {len(want)} "
          f"records waiting in the outbox at the upgrade all arrived, in order; {len(after)} read after it; "
          f"counter 'reads' {reads[0] if reads else '-'}..{reads[-1] if reads else '-'} "
          f"with {gaps} jumps (a jump is a poll that failed, not a lost record)")
EOF
tool() { python3 "$TOOL" "$@"; }

# systemd's notification socket for the Type=notify units (not under /run/systemd: that would
# tell the maintainer scripts that systemd runs).
NOTIFY_DIR=/run/install-test-notify
NOTIFY_LOG=$T/notify.log
mkdir -p "$NOTIFY_DIR"
chmod 0755 "$NOTIFY_DIR"
: >"$NOTIFY_LOG"
python3 "$TOOL" notify "$NOTIFY_DIR" "$NOTIFY_LOG" sanigate sanifleet 2>"$LOGS/notify.log" &
PIDS[notify]=$!
wait_for 5 "the notification sockets" test -S "$NOTIFY_DIR/sanifleet.sock"

# dpkg with its output in LOGS/dpkg-NAME.log; dies on failure or when a maintainer script warns.
run_dpkg() {  # NAME ARGS...
  local name=$1 log=$LOGS/dpkg-$1.log
  shift
  local t0=$SECONDS
  dpkg "$@" >"$log" 2>&1 || die "dpkg $* failed: $(tail -n 20 "$log")"
  if grep -q '^sanigate: warning' "$log"; then die "dpkg $*: $(grep '^sanigate: warning' "$log")"; fi
  grep -i 'warning' "$log" | sed 's/^/   note: /' || true
  ok "dpkg $* ($((SECONDS - t0)) s)"
}

pw_digest() { cat /etc/sanigate/credentials/*.password /etc/sanigate/mosquitto/passwd | md5sum; }

# ---------------------------------------------------------------- install
say "dpkg -i $(basename "$DEB") ($V1)"
run_dpkg install -i "$DEB"
expect_eq "package state" "$(dpkg-query -W -f='${Status} ${Version}' sanigate)" "install ok installed $V1"
for b in sanigate sanifleet sanictl; do [ -x "/usr/bin/$b" ] || die "no /usr/bin/$b"; done
"/usr/bin/sanigate" --version >/dev/null || die "the installed sanigate does not run"
for u in sanigate sanifleet; do [ -f "$UNITDIR/$u.service" ] || die "no $UNITDIR/$u.service"; done
ok "binaries in /usr/bin, units sanigate.service and sanifleet.service in $UNITDIR"

say "conffiles"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' sanigate | awk 'NF { print $1 }')
for f in /etc/sanigate/sanigate.toml /etc/sanigate/sanifleet.toml /etc/sanigate/sanictl.toml \
         /etc/sanigate/mosquitto/sanigate.acl /etc/mosquitto/conf.d/sanigate.conf; do
  grep -qxF "$f" <<<"$conffiles" || die "$f is not a conffile of the installed package"
  [ -f "$f" ] || die "conffile $f does not exist"
done
ok "$(wc -l <<<"$conffiles") conffiles registered and present: $(tr '\n' ' ' <<<"$conffiles")"

say "what the postinst made"
owner_mode() { stat -c '%U:%G %a' "$1"; }
declare -A PW=()
# The credentials, the broker's password file and the ACL with their owners and modes; PW[user].
check_postinst_files() {
  local user f
  expect_eq "/etc/sanigate/credentials" "$(owner_mode /etc/sanigate/credentials)" "root:root 700"
  for user in gateway fleet admin upstream; do
    f=/etc/sanigate/credentials/$user.password
    [ -f "$f" ] || die "no $f"
    expect_eq "$f" "$(owner_mode "$f")" "root:root 600"
    PW[$user]=$(head -n 1 "$f")
    [[ "${PW[$user]}" =~ ^[A-Za-z0-9]{32}$ ]] || die "$f does not hold 32 characters of [A-Za-z0-9]"
  done
  [ "$(printf '%s\n' "${PW[@]}" | sort -u | wc -l)" -eq 4 ] || die "two users got the same password"
  ok "four distinct random passwords of 32 characters"
  expect_eq /etc/sanigate/mosquitto "$(owner_mode /etc/sanigate/mosquitto)" "root:mosquitto 750"
  expect_eq /etc/sanigate/mosquitto/passwd "$(owner_mode /etc/sanigate/mosquitto/passwd)" "mosquitto:mosquitto 600"
  expect_eq /etc/sanigate/mosquitto/sanigate.acl "$(owner_mode /etc/sanigate/mosquitto/sanigate.acl)" "mosquitto:mosquitto 600"
  expect_eq "MQTT users in the broker's password file" "$(cut -d: -f1 /etc/sanigate/mosquitto/passwd | sort | tr '\n' ' ')" "admin fleet gateway upstream "
}
check_postinst_files
[ -z "$(getent passwd sanigate sanifleet || true)" ] || die "system users sanigate/sanifleet exist: the units use DynamicUser="
if command -v deb-systemd-helper >/dev/null; then
  for u in sanigate sanifleet; do
    [ -L "/etc/systemd/system/multi-user.target.wants/$u.service" ] || die "$u.service was not enabled (deb-systemd-helper)"
  done
  ok "both units enabled for the next boot (multi-user.target.wants)"
fi
[ -z "$(pgrep -x sanigate; pgrep -x sanifleet)" ] || die "a daemon runs although there is no systemd"
ok "nothing started without systemd"

# A rebuilt package for the upgrade: the same files, a higher version, and a changed shipped
# sanigate.toml and sanifleet.toml (the operator edits the first: dpkg must keep the edit; the
# second is untouched: dpkg must take the new one).
V2="$V1+rebuild1"
mkdir -p "$T/v2"
dpkg-deb -R "$DEB" "$T/v2/tree"
sed -i "s/^Version: .*/Version: $V2/" "$T/v2/tree/DEBIAN/control"
for f in sanigate.toml sanifleet.toml; do
  echo "## rebuilt package $V2" >>"$T/v2/tree/etc/sanigate/$f"
done
if [ -f "$T/v2/tree/DEBIAN/md5sums" ]; then
  (cd "$T/v2/tree" && for f in etc/sanigate/sanigate.toml etc/sanigate/sanifleet.toml; do
     grep -q " $f\$" DEBIAN/md5sums || continue
     sed -i "\| $f\$|d" DEBIAN/md5sums && md5sum "$f" >>DEBIAN/md5sums
   done)
fi
DEB2=$T/v2/sanigate_${V2}.deb
dpkg-deb -Zgzip -z1 -b "$T/v2/tree" "$DEB2" >/dev/null || die "cannot repack the package as $V2"
dpkg --compare-versions "$V2" gt "$V1" || die "$V2 is not newer than $V1"

# ---------------------------------------------------------------- a technician configures a device
say "configure one Modbus device (profile in /etc/sanigate/profiles, device in sanigate.toml)"
cat >/etc/sanigate/profiles/install-test-room-v1.toml <<'EOF'
## A garbage room controller as tests/sim/modbus_sim serves it, with the simulator's read counter.
description = "install test: garbage room with a read counter"
kind = "garbage_room"
interval_ms = 200
timeout_ms = 150

[[points]]
metric = "fill_level_pct"
address = 0
scale = 0.1
decimals = 1

[[points]]
metric = "temperature_c"
address = 1
type = "i16"
scale = 0.1

[[points]]
metric = "reads"
address = 4
type = "u32"
EOF
sed -i 's/^# status_interval_s = 30$/status_interval_s = 2/' /etc/sanigate/sanigate.toml
grep -qx 'status_interval_s = 2' /etc/sanigate/sanigate.toml || die "no '# status_interval_s = 30' line to edit in sanigate.toml"
cat >>/etc/sanigate/sanigate.toml <<'EOF'

## Added on site.
[metrics]
listen = "127.0.0.1:9187"

[modbus]

[[modbus.devices]]
id = "room-07"
profile = "install-test-room-v1"
host = "127.0.0.1"
port = 1502
location = { lat = 24.5123, lon = 118.1342 }
EOF
EDITED_SUM=$(md5sum </etc/sanigate/sanigate.toml)
"$SIM" --port 1502 --set hr:0=450 --set hr:1=215 --counter hr:4 >"$LOGS/modbus_sim.log" 2>&1 &
PIDS[modbus_sim]=$!
wait_for 10 "the Modbus simulator on 127.0.0.1:1502" bash -c 'echo >/dev/tcp/127.0.0.1/1502'
ok "modbus_sim on 127.0.0.1:1502 (pid ${PIDS[modbus_sim]})"

# ---------------------------------------------------------------- run it
say "start Mosquitto with the installed config and drop-in, then both units"
# A fresh machine's broker has no saved state; a developer box's might (retained statuses).
rm -f /var/lib/mosquitto/mosquitto.db
start_broker
if mosquitto_pub -h 127.0.0.1 -p 1883 -q 1 -t sanigate/v1/houpu/devices/x/telemetry -m '{}' 2>/dev/null; then
  die "the broker accepted an anonymous client"
fi
ok "anonymous client refused"
for user in gateway fleet admin upstream; do
  mosquitto_pub -h 127.0.0.1 -p 1883 -u "$user" -P "${PW[$user]}" -q 1 -t sanigate/v1/houpu/install-test -n ||
    die "the broker refuses $user with the password in /etc/sanigate/credentials/$user.password"
done
if mosquitto_pub -h 127.0.0.1 -p 1883 -u admin -P wrong-password -q 1 -t sanigate/v1/houpu/install-test -n 2>/dev/null; then
  die "the broker accepted a wrong password"
fi
ok "each MQTT user logs in with its credentials file; a wrong password is refused"
start_capture
start_unit sanigate
start_unit sanifleet
wait_for 30 "sanigate's retained status online" tool online "$CAPTURE" sanigate/v1/houpu/gateway/gw-houpu-01/status
wait_for 30 "sanifleet's retained status online" tool online "$CAPTURE" sanigate/v1/houpu/fleet/status
wait_for 30 "10 readings of room-07 on the broker" bash -c "[ \"\$(python3 '$TOOL' count '$CAPTURE')\" -ge 10 ]"
ok "mosquitto_sub: $(tool count "$CAPTURE") readings of room-07 so far"
for u in sanigate sanifleet; do
  expect_eq "/var/lib/$u" "$(readlink "/var/lib/$u")" "private/$u"
  expect_eq "/var/lib/private/$u" "$(stat -c '%u:%g %a' "/var/lib/private/$u")" "${DYN_UID[$u]}:${DYN_UID[$u]} 750"
done
expect_eq "/var/lib/sanigate/outbox.db owner" "$(stat -c '%u' /var/lib/private/sanigate/outbox.db)" "${DYN_UID[sanigate]}"

say "sanictl status (as root, no flags)"
status_ok() {
  sanictl status >"$T/status.out" 2>"$T/status.err" || return 1
  grep -Eq '^gw-houpu-01 +yes ' "$T/status.out" && grep -Eq '^fleet fleet-houpu .*: 1 devices' "$T/status.out"
}
wait_for 30 "sanictl status to show gw-houpu-01 online and sanifleet with 1 device" status_ok
sed 's/^/   | /' "$T/status.out"
ok "sanictl status: the gateway is online and sanifleet tracks the device"

# ---------------------------------------------------------------- upgrade with records waiting
say "upgrade: stop the broker, let records pile up in the outbox"
stop_broker
wait_for 30 "20 records waiting in sanigate's outbox" bash -c "[ \"\$(python3 '$TOOL' metric sanigate_outbox_pending_records)\" -ge 20 ]"
ok "outbox: $(tool metric sanigate_outbox_pending_records) records pending (metrics endpoint)"
PW_SUM=$(pw_digest)

say "dpkg -i $(basename "$DEB2") over $V1 (daemons running, broker down)"
run_dpkg upgrade -i --force-confdef --force-confold "$DEB2"
expect_eq "package state" "$(dpkg-query -W -f='${Status} ${Version}' sanigate)" "install ok installed $V2"
for u in sanigate sanifleet; do alive "${PIDS[$u]}" || die "$u died during the upgrade"; done
ok "the daemons kept running while dpkg replaced the files"
expect_eq "operator-edited sanigate.toml kept" "$(md5sum </etc/sanigate/sanigate.toml)" "$EDITED_SUM"
[ -f /etc/sanigate/sanigate.toml.dpkg-dist ] || die "no /etc/sanigate/sanigate.toml.dpkg-dist (the new shipped version)"
ok "the new shipped version is beside it as sanigate.toml.dpkg-dist"
grep -qx "## rebuilt package $V2" /etc/sanigate/sanifleet.toml || die "the unedited sanifleet.toml was not updated"
ok "the unedited sanifleet.toml was replaced by the new one"
expect_eq "passwords and broker users unchanged" "$(pw_digest)" "$PW_SUM"
check_postinst_files

for u in sanigate sanifleet; do
  expect_eq "$u's running binary" "$(readlink "/proc/${PIDS[$u]}/exe")" "/usr/bin/$u (deleted)"
done

# What the postinst asks systemd for on an upgrade: restart both units (SIGTERM, start). The
# outbox is read just before the SIGTERM and again once sanigate has exited: with the broker down
# nothing may leave it, so the first set must be within the second, and all of the second must
# arrive once the broker is back.
say "restart both units as the postinst's 'restart' would (SIGTERM, then start)"
tool outbox /var/lib/private/sanigate/outbox.db live >"$T/before-sigterm.ids" || die "cannot read the live outbox"
stop_unit sanigate
stop_unit sanifleet
mkdir -p "$T/snap"
cp -a /var/lib/private/sanigate/outbox.db* "$T/snap/"
tool outbox "$T/snap/outbox.db" >"$T/waiting.ids"
waiting=$(wc -l <"$T/waiting.ids")
[ "$waiting" -ge 20 ] || die "only $waiting telemetry records were in the outbox at the upgrade"
gone=$(grep -cvxF -f "$T/waiting.ids" "$T/before-sigterm.ids" || true)
[ "$gone" -eq 0 ] || die "$gone records left the outbox during the SIGTERM with the broker down: $(grep -vxF -f "$T/waiting.ids" "$T/before-sigterm.ids" | head -n 3 | tr '\n' ' ')"
ok "$(wc -l <"$T/before-sigterm.ids") readings in the outbox before the SIGTERM, all still there after it"
last_pre=$(tail -n 1 "$T/waiting.ids")
last_pre=${last_pre##*:}
ok "$waiting readings waiting in /var/lib/sanigate/outbox.db, up to $(tail -n 1 "$T/waiting.ids")"
start_unit sanigate
start_unit sanifleet
say "start the broker again: every waiting record must arrive"
start_broker
wait_for 60 "the $waiting records of the outbox on the broker" tool all-arrived "$CAPTURE" "$T/waiting.ids"
wait_for 30 "readings taken after the upgrade" bash -c \
  "python3 '$TOOL' verify '$CAPTURE' '$T/waiting.ids' $last_pre"
ok "$(tool verify "$CAPTURE" "$T/waiting.ids" "$last_pre")"
wait_for 30 "sanictl status after the upgrade" status_ok
ok "sanictl status: gw-houpu-01 online again after the upgrade"

# ---------------------------------------------------------------- purge
say "dpkg --purge (the daemons stopped first, as prerm's 'stop' would under systemd)"
stop_unit sanigate
stop_unit sanifleet
stop capture 5
stop_broker
run_dpkg purge --purge sanigate
state=$(dpkg-query -W -f='${Status}' sanigate 2>/dev/null || echo "not known to dpkg")
case "$state" in "unknown ok not-installed" | "not known to dpkg" | "purge ok not-installed") ok "package state: $state" ;;
  *) die "package state after purge: $state" ;; esac
check_gone() {
  local p
  for p in "$@"; do
    if [ -e "$p" ] || [ -L "$p" ]; then die "$p is still there"; fi
  done
}
check_gone /usr/bin/sanigate /usr/bin/sanifleet /usr/bin/sanictl "$UNITDIR/sanigate.service" "$UNITDIR/sanifleet.service" \
  /var/lib/sanigate /var/lib/sanifleet /var/lib/private/sanigate /var/lib/private/sanifleet \
  /etc/sanigate/credentials /etc/sanigate/mosquitto /etc/mosquitto/conf.d/sanigate.conf \
  /etc/sanigate/sanigate.toml /etc/sanigate/sanigate.toml.dpkg-dist /etc/sanigate/sanifleet.toml /etc/sanigate/sanictl.toml \
  /etc/systemd/system/multi-user.target.wants/sanigate.service /etc/systemd/system/multi-user.target.wants/sanifleet.service
left=$(find /etc/systemd /var/lib/systemd -name '*sanigate*' -o -name '*sanifleet*' 2>/dev/null | tr '\n' ' ')
[ -z "$left" ] || die "systemd state left after the purge: $left"
ok "state (/var/lib/sanigate, /var/lib/sanifleet and their private dirs), passwords, the broker's users, configs, drop-in and units are gone"
left=$(find /etc/sanigate -mindepth 1 2>/dev/null | sort | tr '\n' ' ')
expect_eq "left in /etc/sanigate (the technician's own file only)" "$left" \
  "/etc/sanigate/profiles /etc/sanigate/profiles/install-test-room-v1.toml "
rm -rf /etc/sanigate
start_broker
stop_broker
ok "Mosquitto still starts with Debian's config after the purge"

# ---------------------------------------------------------------- remove on a fresh install
say "fresh dpkg -i $(basename "$DEB2"), run once, then dpkg -r"
run_dpkg fresh -i "$DEB2"
[ "$(head -n 1 /etc/sanigate/credentials/admin.password)" != "${PW[admin]}" ] || die "the purge kept the admin password"
ok "new passwords made after the purge"
start_broker
start_unit sanigate
start_unit sanifleet
wait_for 30 "sanictl status to answer after the fresh install" \
  bash -c 'sanictl status 2>/dev/null | grep -Eq "^gw-houpu-01 +yes "'
ok "the fresh install runs (gw-houpu-01 online, no devices configured)"
check_postinst_files
say "a new password for upstream: delete its file, dpkg-reconfigure sanigate, reload the broker"
old_pw=${PW[upstream]}
others="${PW[gateway]} ${PW[fleet]} ${PW[admin]}"
rm /etc/sanigate/credentials/upstream.password
dpkg-reconfigure sanigate >"$LOGS/dpkg-reconfigure.log" 2>&1 || die "dpkg-reconfigure failed: $(tail -n 20 "$LOGS/dpkg-reconfigure.log")"
check_postinst_files
[ "${PW[upstream]}" != "$old_pw" ] || die "dpkg-reconfigure did not make a new upstream password"
[ "${PW[gateway]} ${PW[fleet]} ${PW[admin]}" = "$others" ] || die "dpkg-reconfigure changed another user's password"
kill -HUP "${PIDS[mosquitto]}"   # mosquitto.service's ExecReload (the postinst's try-reload-or-restart)
wait_for 10 "the broker to take the new upstream password" \
  mosquitto_pub -h 127.0.0.1 -p 1883 -u upstream -P "${PW[upstream]}" -q 1 -t sanigate/v1/houpu/install-test -n
if mosquitto_pub -h 127.0.0.1 -p 1883 -u upstream -P "$old_pw" -q 1 -t sanigate/v1/houpu/install-test -n 2>/dev/null; then
  die "the broker still accepts the old upstream password"
fi
ok "new upstream password accepted, the old one refused; the other passwords unchanged"
stop_unit sanigate
stop_unit sanifleet
stop_broker
PW_SUM=$(pw_digest)
run_dpkg remove -r sanigate
expect_eq "package state" "$(dpkg-query -W -f='${Status}' sanigate)" "deinstall ok config-files"
check_gone /usr/bin/sanigate /usr/bin/sanifleet /usr/bin/sanictl "$UNITDIR/sanigate.service" "$UNITDIR/sanifleet.service"
for p in /var/lib/sanigate /var/lib/sanifleet /var/lib/private/sanigate/outbox.db /var/lib/private/sanifleet \
         /etc/sanigate/sanigate.toml /etc/sanigate/sanifleet.toml /etc/sanigate/sanictl.toml \
         /etc/mosquitto/conf.d/sanigate.conf /etc/sanigate/mosquitto/sanigate.acl; do
  [ -e "$p" ] || die "dpkg -r removed $p"
done
expect_eq "passwords and broker users kept" "$(pw_digest)" "$PW_SUM"
ok "remove: programs and units gone; state, configs, passwords, broker users and drop-in kept"
start_broker
mosquitto_pub -h 127.0.0.1 -p 1883 -q 1 -u admin -P "$(head -n 1 /etc/sanigate/credentials/admin.password)" \
  -t sanigate/v1/houpu/devices/x/telemetry -m '{}' || die "after remove the broker no longer accepts the admin user"
stop_broker
ok "the broker still runs with the kept drop-in and users"
if command -v deb-systemd-helper >/dev/null; then
  for u in sanigate sanifleet; do
    [ "$(readlink "/etc/systemd/system/$u.service")" = /dev/null ] || die "$u.service not masked after remove"
    [ -L "/etc/systemd/system/multi-user.target.wants/$u.service" ] || die "$u.service's enabled state forgotten on remove"
  done
  ok "both units masked (their files are gone), their enabled state remembered (as debhelper does)"
fi
say "dpkg -i again after the remove: configs, passwords and the units' enabled state come back"
run_dpkg reinstall -i "$DEB2"
expect_eq "passwords and broker users kept" "$(pw_digest)" "$PW_SUM"
if command -v deb-systemd-helper >/dev/null; then
  for u in sanigate sanifleet; do
    [ -L "/etc/systemd/system/multi-user.target.wants/$u.service" ] || die "$u.service not enabled again after reinstall"
    [ ! -e "/etc/systemd/system/$u.service" ] || die "$u.service still masked after reinstall"
  done
  ok "both units enabled again, not masked"
fi
run_dpkg remove2 -r sanigate
dpkg --purge sanigate >"$LOGS/dpkg-purge2.log" 2>&1 || die "dpkg --purge after remove failed: $(tail -n 20 "$LOGS/dpkg-purge2.log")"
check_gone /var/lib/sanigate /var/lib/sanifleet /var/lib/private/sanigate /var/lib/private/sanifleet /etc/sanigate \
  /etc/mosquitto/conf.d/sanigate.conf
left=$(find /etc/systemd /var/lib/systemd -name '*sanigate*' -o -name '*sanifleet*' 2>/dev/null | tr '\n' ' ')
[ -z "$left" ] || die "systemd state left after the purge: $left"
ok "purge after remove: state, configs, passwords, drop-in and the units' enable/mask state gone"

say "all checks passed"
exit 0
