#!/usr/bin/env bash
# Deploy hook: run after a deploy (or from cron) to invalidate exactly the
# images that changed and publish a fresh cache token.
#
#   OPTIMOLE_API_KEY=opt_... examples/deploy-hook.sh /etc/optiwatch/watcher.toml
#
# Exit codes follow optiwatch's: 0 done, 1 something is still owed (it is
# kept and sent by the next run: a deploy need not fail for it), 2 usage or
# configuration error (fix it: nothing was attempted).
set -uo pipefail
config=${1:-/etc/optiwatch/watcher.toml}
report=$(mktemp)
trap 'rm -f "$report"' EXIT

optiwatch --config "$config" scan --json >"$report"
code=$?

# One JSON object on stdout; logs went to stderr. python3 reads it here;
# `jq '.counts'` does the same.
python3 - "$report" <<'PY' || cat "$report"
import json, sys
r = json.load(open(sys.argv[1]))
c = r["counts"]
print(f"optiwatch: {c['changed']} changed, {c['deleted']} deleted, {c['new']} new; "
      f"{len(r['invalidated'])} invalidated in {r['requests']} requests; "
      f"token {r['token'] or '-'}; {len(r['pending'])} still owed")
for e in r["errors"]:
    print("optiwatch error:", e, file=sys.stderr)
PY

case $code in
  0) ;;
  1) echo "optiwatch: some work is still owed; the next run sends it" >&2 ;;
  *) echo "optiwatch: configuration or usage error (exit $code)" >&2; exit "$code" ;;
esac
exit 0
