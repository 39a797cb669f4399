#!/usr/bin/env bash
# Installs the .deb that packaging/build.sh made (target/dist/), checks what
# it installed, runs a baseline scan as the package's user, then removes and
# purges it and checks that nothing is left. Needs root (dpkg -i) on a
# Debian-like system without optiwatch installed; prints each step's time.
#
#   packaging/build.sh && packaging/smoke.sh
#
# The package keeps the system user `optiwatch` on purge (Debian practice);
# this script deletes it again when it did not exist before, and purges the
# package when a check fails, so the machine is left as it was.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "smoke.sh: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "smoke.sh: needs root (dpkg -i); skipped" >&2; exit 2; }
dpkg -s optiwatch >/dev/null 2>&1 &&
    { echo "smoke.sh: optiwatch is installed already; this script would remove it" >&2; exit 2; }
debs=(target/dist/optiwatch_*.deb)
[ -f "${debs[-1]}" ] || fail "no target/dist/optiwatch_*.deb: run packaging/build.sh first"
deb=${debs[-1]}
user_existed=no
getent passwd optiwatch >/dev/null && user_existed=yes
site=
# Whatever happens, leave the machine as it was: no package, no new user.
cleanup() {
    [ -n "$site" ] && rm -rf "$site"
    if dpkg -s optiwatch >/dev/null 2>&1; then dpkg --purge optiwatch >/dev/null; fi
    if [ "$user_existed" = no ] && getent passwd optiwatch >/dev/null; then
        userdel optiwatch
        if getent group optiwatch >/dev/null; then groupdel optiwatch; fi
    fi
}
trap cleanup EXIT

declare -a report=()
t0=$(date +%s.%N)
lap() { # lap NAME: records the time since the previous lap
    local now
    now=$(date +%s.%N)
    report+=("$(awk -v n="$1" -v s="$t0" -v e="$now" 'BEGIN { printf "%-62s %6.2f s", n, e - s }')")
    t0=$now
    echo "ok: $1" >&2
}

dpkg -i "$deb"
lap "dpkg -i $(basename "$deb")"

[ "$(command -v optiwatch)" = /usr/bin/optiwatch ] || fail "optiwatch is not /usr/bin/optiwatch"
optiwatch --version | grep -Eq '^optiwatch [0-9]' || fail "optiwatch --version"
lap "optiwatch --version"

commands=$(optiwatch --help | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }')
[ -n "$commands" ] || fail "no commands in optiwatch --help"
page=$(MANWIDTH=100 MANPAGER=cat man optiwatch 2>/tmp/optiwatch-smoke-man.err)
[ -s /tmp/optiwatch-smoke-man.err ] && fail "man optiwatch warned: $(cat /tmp/optiwatch-smoke-man.err)"
rm -f /tmp/optiwatch-smoke-man.err
for c in $commands; do
    grep -q "optiwatch $c" <<<"$page" || fail "man optiwatch does not show the command $c"
done
for s in FILES ENVIRONMENT "EXIT STATUS" "SEE ALSO"; do
    grep -qx "$s" <<<"$page" || fail "man optiwatch has no $s section"
done
lap "man optiwatch: $(wc -w <<<"$commands") commands, 4 sections"

unit=$(dpkg -L optiwatch | grep '/systemd/system/optiwatch.service$') || fail "no unit installed"
grep -q '^ExecStart=/usr/bin/optiwatch ' "$unit" || fail "$unit does not start /usr/bin/optiwatch"
out=$(systemd-analyze verify --man=no "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
[ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
[ ! -e /etc/systemd/system/multi-user.target.wants/optiwatch.service ] ||
    fail "the service was enabled on install; it needs a config first"
lap "systemd-analyze verify $unit"

for f in /usr/share/bash-completion/completions/optiwatch \
    /usr/share/zsh/vendor-completions/_optiwatch \
    /usr/share/fish/vendor_completions.d/optiwatch.fish \
    /usr/share/doc/optiwatch/examples/watcher.example.toml; do
    [ -s "$f" ] || fail "$f missing or empty"
done
bash -n /usr/share/bash-completion/completions/optiwatch || fail "bash completion syntax"
if command -v zsh >/dev/null; then zsh -n /usr/share/zsh/vendor-completions/_optiwatch || fail "zsh completion syntax"; fi
if command -v fish >/dev/null; then fish -n /usr/share/fish/vendor_completions.d/optiwatch.fish || fail "fish completion syntax"; fi
lap "completions (bash, zsh, fish) and example config"

getent passwd optiwatch | grep -q ':/usr/sbin/nologin$' || fail "no system user optiwatch with nologin"
[ "$(stat -c %U:%a /var/lib/optiwatch)" = optiwatch:755 ] || fail "/var/lib/optiwatch: $(stat -c %U:%a /var/lib/optiwatch)"
[ "$(stat -c %U:%G:%a /etc/optiwatch)" = root:optiwatch:750 ] || fail "/etc/optiwatch: $(stat -c %U:%G:%a /etc/optiwatch)"
# The package's user can do its job: a baseline scan into its state folder.
site=$(mktemp -d)
chmod 755 "$site"
mkdir "$site/media" && echo img >"$site/media/a.jpg" && chmod -R a+rX "$site"
printf 'state = "/var/lib/optiwatch/smoke.db"\n[[rules]]\ndir = "%s/media"\nurl = "https://example.com"\n' "$site" >"$site/watcher.toml"
# (A baseline calls no API, but the key must be set: a dummy one.)
runuser -u optiwatch -- env OPTIMOLE_API_KEY=smoke-test-not-a-key \
    optiwatch -q -c "$site/watcher.toml" scan --baseline >/dev/null ||
    fail "baseline scan as the optiwatch user"
[ "$(stat -c %U /var/lib/optiwatch/smoke.db)" = optiwatch ] || fail "store not owned by optiwatch"
rm -rf "$site"
site=
lap "user optiwatch, folders, scan --baseline as optiwatch"

dpkg -r optiwatch
[ ! -e /usr/bin/optiwatch ] || fail "dpkg -r left /usr/bin/optiwatch"
[ -e /var/lib/optiwatch/smoke.db ] || fail "dpkg -r (not purge) removed the state store"
lap "dpkg -r optiwatch"
dpkg --purge optiwatch
[ ! -e /var/lib/optiwatch ] || fail "purge left /var/lib/optiwatch"
[ ! -e /etc/optiwatch ] || fail "purge left /etc/optiwatch"
[ ! -e "$unit" ] || fail "purge left $unit"
if dpkg -s optiwatch >/dev/null 2>&1; then fail "dpkg still knows optiwatch"; fi
lap "dpkg --purge optiwatch"

echo
echo "smoke test passed: $deb ($(stat -c %s "$deb") bytes)"
printf '%s\n' "${report[@]}"
