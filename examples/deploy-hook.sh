#!/usr/bin/env bash
# Deploy hook: run after a deploy (or from cron) to invalidate exactly the
# images that changed and publish a fresh cache token.
#
#   OPTIMOLE_API_KEY=opt_... examples/deploy-hook.sh /etc/optiwatch/watcher.toml
#
# Exit codes follow optiwatch's: 0 done, 1 something is still owed (it is
# kept and sent by the next run: a deploy need not fail for it, so this
# hook exits 0), 2 usage or configuration error (fix it: nothing was
# attempted). Any other code (optiwatch missing, killed) is passed on.
set -uo pipefail
config=${1:-/etc/optiwatch/watcher.toml}

if ! command -v optiwatch >/dev/null; then
    echo "optiwatch: command not found in PATH: install it (see README, Install) or add its folder to PATH" >&2
    exit 127
fi
report=$(mktemp) || exit 1
trap 'rm -f "$report"' EXIT

optiwatch --config "$config" scan --json >"$report"
code=$?

case $code in
  0 | 1) ;;
  2)
    # optiwatch named the problem (key, line, column) on stderr just above;
    # there is no report to summarise.
    echo "optiwatch: configuration or usage error in $config (exit 2): fix it and run again; nothing was sent" >&2
    exit 2 ;;
  *)
    echo "optiwatch: scan ended with exit code $code (see the messages above)" >&2
    exit "$code" ;;
esac

# One JSON object on stdout; logs went to stderr. python3 summarises it
# (`jq .counts` shows the same numbers).
if command -v python3 >/dev/null; then
    python3 - "$report" <<'PY'
import json, sys
try:
    with open(sys.argv[1]) as f:
        r = json.load(f)
    c = r["counts"]
    print(f"optiwatch: {c['changed']} changed, {c['deleted']} deleted, {c['new']} new; "
          f"{len(r['invalidated'])} invalidated in {r['requests']} requests; "
          f"token {r['token'] or '-'}; {len(r['pending'])} still owed")
    for e in r["errors"]:
        print("optiwatch error:", e, file=sys.stderr)
except (OSError, ValueError, KeyError, TypeError) as e:
    print(f"optiwatch: the scan report could not be read ({type(e).__name__}: {e})",
          file=sys.stderr)
PY
else
    echo "optiwatch: scan done (exit $code); install python3 for a summary"
fi

if [ "$code" = 1 ]; then
    echo "optiwatch: some work is still owed; the next run sends it" >&2
fi
exit 0
