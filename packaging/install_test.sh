#!/usr/bin/env bash
# install_layout: `meson install` into a staging root puts binaries, rule sets, the example
# config, systemd units, sysusers and logrotate files where docs/operations.md says, the
# units pass `systemd-analyze verify` inside that root, and the installed pgwarden-cp finds
# the installed rule sets without --rules-dir (it checks the example config with them).
#   install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
stage=$(mktemp -d /tmp/pgw-install.XXXXXX)
trap 'rm -rf "$stage"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

meson install -C "$build" --no-rebuild --quiet --destdir "$stage" >/dev/null
prefix=$(meson introspect "$build" --buildoptions | python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
sysconf=$(meson introspect "$build" --buildoptions | python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="sysconfdir"))')
case $sysconf in /*) ;; *) sysconf=$prefix/$sysconf ;; esac
root=$stage
for f in "$prefix/bin/pgwarden-cp" "$prefix/bin/pgwarden-dp" "$prefix/bin/pgwardenctl" \
         "$prefix/share/pgwarden/rules/deny.rules" "$prefix/share/pgwarden/rules/approve.rules" \
         "$prefix/share/pgwarden/rules/pii.rules" "$sysconf/pgwarden/rules/deny.rules" \
         "$sysconf/pgwarden/pgwarden.json" \
         "$sysconf/logrotate.d/pgwarden" "$prefix/lib/sysusers.d/pgwarden.conf" \
         "$prefix/lib/systemd/system/pgwarden-cp.service" \
         "$prefix/lib/systemd/system/pgwarden-dp.service" \
         "$prefix/lib/systemd/system/pgwarden-dp-dpdk.service" \
         "$prefix/share/doc/pgwarden/operations.md"; do
  [ -e "$root$f" ] || fail "$f not installed"
done
echo "PASS: files installed under $prefix and $sysconf"

# The units name the installed paths, and systemd accepts them (inside the staging root,
# where the binaries exist at the paths the units name).
grep -q "^ExecStart=$prefix/bin/pgwarden-cp --config $sysconf/pgwarden/pgwarden.json" \
  "$root$prefix/lib/systemd/system/pgwarden-cp.service" || fail "cp unit ExecStart path"
mkdir -p "$root$sysconf/default"
echo 'PGWARDEN_DPDK_ARGS=' > "$root$sysconf/default/pgwarden-dp-dpdk"
# systemd resolves dependencies (sysinit.target, ...) and ExecReload's /bin/kill inside the
# root: give the staging root the host's system units and kill(1).
mkdir -p "$root/usr/lib/systemd/system" "$root/bin"
cp -a /lib/systemd/system/. "$root/usr/lib/systemd/system/"
cp /bin/kill "$root/bin/kill"
units=()
for u in pgwarden-cp pgwarden-dp pgwarden-dp-dpdk; do
  units+=("$root$prefix/lib/systemd/system/$u.service")
done
if ! out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --root="$root" "${units[@]}" 2>&1); then
  echo "$out" >&2; fail "systemd-analyze verify"
fi
# verify prints warnings without failing for unknown or misspelt settings: none allowed.
if echo "$out" | grep -E "Unknown|unknown|Invalid|invalid|Failed|ignoring" >&2; then
  fail "systemd-analyze reported problems"
fi
echo "PASS: systemd-analyze verify (3 units)"

# Capabilities: the cp and session-engine units hold none; the DPDK unit only its four.
for u in pgwarden-cp pgwarden-dp; do
  grep -qx 'CapabilityBoundingSet=' "$root$prefix/lib/systemd/system/$u.service" \
    || fail "$u must drop every capability"
done
grep -qx 'CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN CAP_IPC_LOCK CAP_SYS_NICE' \
  "$root$prefix/lib/systemd/system/pgwarden-dp-dpdk.service" || fail "dpdk unit capabilities"
echo "PASS: capability sets"

# The installed rule sets (pristine and live copies) compile with the installed pgwardenctl.
for dir in "$prefix/share/pgwarden/rules" "$sysconf/pgwarden/rules"; do
  "$root$prefix/bin/pgwardenctl" rules check "$root$dir"/*.rules >/dev/null \
    || fail "installed rule sets in $dir do not compile"
done
echo "PASS: installed rule sets compile"
