#!/usr/bin/env bash
# Checks the Debian package `./sanigate.sh package` built (packaging/README.md), without
# installing it: control fields, file list, modes, conffiles, maintainer scripts, the units
# (systemd-analyze verify), the installed configs (--check-config with the package's own
# binaries) and the Mosquitto drop-in (a real broker started with it: anonymous refused, a user
# made as the postinst makes them accepted).
# usage: check_deb.sh BUILD_DIR VERSION SOURCE_DIR   (or SANIGATE_DEB=path/to.deb)
# Exit 77 (ctest: skipped) when there is no package for VERSION in BUILD_DIR.
set -euo pipefail
BUILD=${1:?usage: check_deb.sh BUILD_DIR VERSION SOURCE_DIR}
VERSION=${2:?version}
SRC=${3:?source dir}

deb=${SANIGATE_DEB:-}
if [ -z "$deb" ]; then
  deb=$(ls -t "$BUILD"/sanigate_"$VERSION"-*_*.deb 2>/dev/null | head -n 1 || true)
fi
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
  echo "SKIP: no $BUILD/sanigate_$VERSION-*.deb: build it with ./sanigate.sh package"
  exit 77
fi
echo "checking $deb"

T=$(mktemp -d /tmp/sanigate-deb.XXXXXX)
MQPID=
cleanup() {
  [ -n "$MQPID" ] && kill "$MQPID" 2>/dev/null && wait "$MQPID" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
FAILED=0
fail() { echo "FAIL: $*"; FAILED=1; }

# --- Control fields. ---
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = sanigate ] || fail "Package is '$(field Package)'"
[[ "$(field Version)" == "$VERSION"-* ]] || fail "Version '$(field Version)' is not $VERSION-REVISION"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is '$(field Architecture)'"
[ -n "$(field Maintainer)" ] || fail "no Maintainer"
[ -n "$(field Section)" ] || fail "no Section"
depends=", $(field Depends),"
for dep in mosquitto procps libsystemd0 libsqlite3-0 libmodbus5 libmosquitto1 libstdc++6; do
  [[ "$depends" == *", $dep "* || "$depends" == *", $dep,"* ]] || fail "Depends lacks $dep: $depends"
done

# --- Files, owners and modes. ---
dpkg-deb -c "$deb" | awk '{ p = $6; sub(/^\./, "", p); print $1, $2, p }' > "$T/list"
has() {  # MODE PATH: the entry exists with that mode, owned by root
  grep -qxF -- "$1 root/root $2" "$T/list" || fail "missing or wrong mode/owner: $1 root/root $2 ($(grep -F -- " $2" "$T/list" | head -n 1))"
}
for b in sanigate sanifleet sanictl; do has -rwxr-xr-x "/usr/bin/$b"; done
for f in sanigate.toml sanifleet.toml sanictl.toml mosquitto/sanigate.acl; do has -rw-r--r-- "/etc/sanigate/$f"; done
has drwxr-xr-x /etc/sanigate/profiles/
has -rw-r--r-- /etc/mosquitto/conf.d/sanigate.conf
for u in sanigate sanifleet; do has -rw-r--r-- "/lib/systemd/system/$u.service"; done
for p in "$SRC"/config/profiles/*.toml; do has -rw-r--r-- "/usr/share/sanigate/profiles/$(basename "$p")"; done
for s in "$SRC"/config/schema/*.json; do has -rw-r--r-- "/usr/share/sanigate/schema/$(basename "$s")"; done
for d in copyright changelog.Debian.gz README.md README.Debian; do has -rw-r--r-- "/usr/share/doc/sanigate/$d"; done
has -rw-r--r-- /usr/share/man/man8/sanigate.8.gz
has -rw-r--r-- /usr/share/man/man8/sanifleet.8.gz
has -rw-r--r-- /usr/share/man/man1/sanictl.1.gz
# Made at installation or by systemd, never shipped: credentials, the broker's users, state.
grep -E ' (/usr/local/|/var/|/etc/sanigate/credentials|/etc/sanigate/mosquitto/passwd)' "$T/list" &&
  fail "ships what the postinst or systemd makes (above)"

# --- conffiles: exactly the regular files under /etc. ---
dpkg-deb -e "$deb" "$T/control"
awk '$1 ~ /^-/ && $3 ~ /^\/etc\// { print $3 }' "$T/list" | sort > "$T/etc-files"
sort "$T/control/conffiles" > "$T/conffiles"
diff -u "$T/etc-files" "$T/conffiles" || fail "conffiles differ from the files under /etc (- shipped, + listed)"

# --- Maintainer scripts: present, executable, valid sh. ---
for s in postinst prerm postrm; do
  [ -x "$T/control/$s" ] || { fail "no executable $s"; continue; }
  sh -n "$T/control/$s" || fail "$s is not valid sh"
  head -n 1 "$T/control/$s" | grep -qx '#!/bin/sh' || fail "$s does not start with #!/bin/sh"
done
grep -q 'mosquitto_passwd -b' "$T/control/postinst" || fail "postinst does not make the MQTT users"

# --- The files themselves. ---
R=$T/root
dpkg-deb -x "$deb" "$R"
# Each daemon's password_file is the credential its unit loads, from the file the postinst makes.
check_credential() {  # UNIT USER CONFIG
  grep -qx "LoadCredential=mqtt.password:/etc/sanigate/credentials/$2.password" "$R/lib/systemd/system/$1.service" ||
    fail "$1.service does not load /etc/sanigate/credentials/$2.password"
  grep -qx "password_file = \"/run/credentials/$1.service/mqtt.password\"" "$R/etc/sanigate/$3" ||
    fail "$3 does not read the credential of $1.service"
  grep -qx "username = \"$2\"" "$R/etc/sanigate/$3" || fail "$3 does not log in as $2"
}
check_credential sanigate gateway sanigate.toml
check_credential sanifleet fleet sanifleet.toml
grep -qx 'password_file = "/etc/sanigate/credentials/admin.password"' "$R/etc/sanigate/sanictl.toml" ||
  fail "sanictl.toml does not read the admin password"

# lintian with Debian's profile: any error or warning fails (packaging/README.md explains the
# overrides). This .deb is the test build's; the hardened one is `./sanigate.sh package`'s, whose
# machine code the "lengH" override was written for: an override that finds nothing to match in
# this build is not a problem of the package.
if command -v lintian >/dev/null; then
  out=$(lintian "$deb" 2>&1 || true)
  tags=$(grep -E '^[EW]: ' <<<"$out" | grep -v ' mismatched-override ' || true)
  [ -z "$tags" ] || fail "lintian: $(head -20 <<<"$tags")"
else
  echo "note: no lintian, package not linted"
fi

# The units, with their binaries pointing into the extracted tree; any warning is a failure.
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$T/units"
  for u in sanigate sanifleet; do
    sed "s|/usr/bin/|$R/usr/bin/|g" "$R/lib/systemd/system/$u.service" > "$T/units/$u.service"
  done
  if out=$(systemd-analyze verify "$T/units/sanigate.service" "$T/units/sanifleet.service" 2>&1); then
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
  else
    fail "systemd-analyze verify: $out"
  fi
else
  echo "note: no systemd-analyze, units not verified"
fi

# The installed configs are valid for the package's binaries, with the passwords where the
# services would find them.
(umask 077 && echo not-a-password > "$T/pw")
sed "s|/run/credentials/sanigate.service/mqtt.password|$T/pw|" "$R/etc/sanigate/sanigate.toml" > "$T/sanigate.toml" || fail "no sanigate.toml"
sed "s|/run/credentials/sanifleet.service/mqtt.password|$T/pw|" "$R/etc/sanigate/sanifleet.toml" > "$T/sanifleet.toml" || fail "no sanifleet.toml"
sed "s|/etc/sanigate/credentials/admin.password|$T/pw|" "$R/etc/sanigate/sanictl.toml" > "$T/sanictl.toml" || fail "no sanictl.toml"
"$R/usr/bin/sanigate" --check-config "$T/sanigate.toml" || fail "the installed sanigate.toml is invalid"
"$R/usr/bin/sanifleet" --check-config "$T/sanifleet.toml" || fail "the installed sanifleet.toml is invalid"
# sanictl reads its config before connecting: 2 = a bad config, 3 = cannot reach the broker.
rc=0
"$R/usr/bin/sanictl" --config "$T/sanictl.toml" --broker tcp://127.0.0.1:9 --timeout 300 status >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 3 ] || fail "sanictl with the installed sanictl.toml: exit $rc (3 expected: config read, no broker)"

# --- The Mosquitto drop-in under a main config like Debian's (which sets persistence itself). ---
if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then
  MQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$T/conf.d" "$T/mq" "$T/mqdata"
  sed -e "s|/etc/sanigate/mosquitto/|$T/mq/|" -e "s|^listener 1883 |listener $port |" \
    "$R/etc/mosquitto/conf.d/sanigate.conf" > "$T/conf.d/sanigate.conf"
  cp "$R/etc/sanigate/mosquitto/sanigate.acl" "$T/mq/"
  : > "$T/mq/passwd"
  mosquitto_passwd -b "$T/mq/passwd" gateway secret-of-gateway
  printf 'user %s\npersistence true\npersistence_location %s/\nlog_dest stderr\ninclude_dir %s\n' \
    "$(id -un)" "$T/mqdata" "$T/conf.d" > "$T/mosquitto.conf"
  "$MQ" -c "$T/mosquitto.conf" 2> "$T/mosquitto.log" &
  MQPID=$!
  for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  if ! kill -0 "$MQPID" 2>/dev/null; then
    fail "mosquitto does not start with the drop-in: $(cat "$T/mosquitto.log")"
    MQPID=
  else
    mosquitto_pub -p "$port" -q 1 -t sanigate/v1/s/devices/d/telemetry -m '{}' 2>/dev/null &&
      fail "the broker accepted an anonymous client"
    mosquitto_pub -p "$port" -q 1 -u gateway -P secret-of-gateway -t sanigate/v1/s/devices/d/telemetry -m '{}' ||
      fail "the broker refused the gateway user"
  fi
else
  echo "note: no mosquitto, drop-in not started"
fi

[ "$FAILED" -eq 0 ] && echo "package ok: $deb"
exit "$FAILED"
