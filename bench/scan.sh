#!/usr/bin/env bash
# Scan benchmark: optiwatch's baseline scan (hash everything) and unchanged
# re-scan, side by side with what a user could script instead, in one run:
#   find DIR -type f -printf '%s %T@ %i\n'   (the stat walk a re-scan needs)
#   b3sum over the same files, 2 processes   (the hashing a baseline needs)
#
# Usage: bench/scan.sh [FILES] [RUNS]     (defaults: 100000 files, 3 runs)
# Needs: a release build (made here) and b3sum (cargo install b3sum).
# Prints the median wall time of RUNS runs for each, and the ratios.
# Caches are warm for every contender (each runs once before timing): this
# measures CPU and syscall cost, not the disk.
set -euo pipefail
files=${1:-100000}
runs=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=${BENCH_DIR:-$(mktemp -d /tmp/optiwatch-bench.XXXXXX)}
trap '[ -z "${BENCH_KEEP:-}" ] && rm -rf "$work"' EXIT

command -v b3sum >/dev/null || { echo "bench: b3sum not found: run 'cargo install b3sum'" >&2; exit 2; }
(cd "$here" && cargo build --release --quiet --bin optiwatch)
bin="$here/target/release/optiwatch"

tree="$work/uploads"
if [ ! -d "$tree" ]; then
  echo "generating $files files of 8 KiB in YYYY/MM folders under $tree ..."
  python3 - "$tree" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
block = os.urandom(8192)
for i in range(n):
    d = os.path.join(root, f"{2000 + i % 25}", f"{i // 25 % 12 + 1:02d}")
    if i < 300: os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"image-{i}.jpg"), "wb") as f:
        f.write(i.to_bytes(8, "little") + block[8:])
PY
fi
cat > "$work/watcher.toml" <<TOML
state = "bench.db"
[api]
base_url = "http://127.0.0.1:9/api"
[[rules]]
dir = "uploads"
url = "https://example.com/uploads"
TOML
export OPTIMOLE_API_KEY=bench-key-not-used

now() { date +%s.%N; }
# time_it NAME SETUP COMMAND: runs SETUP (untimed) then COMMAND, RUNS times;
# prints the median seconds.
time_it() {
  local setup=$1 cmd=$2 t=() s e
  eval "$setup"; eval "$cmd" >/dev/null 2>&1  # warm-up
  for _ in $(seq "$runs"); do
    eval "$setup"
    s=$(now); eval "$cmd" >/dev/null 2>&1; e=$(now)
    t+=("$(awk -v a="$s" -v b="$e" 'BEGIN {print b - a}')")
  done
  printf '%s\n' "${t[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'
}

cd "$work"
find_t=$(time_it ":" "find uploads -type f -printf '%s %T@ %i\n'")
b3_t=$(time_it ":" "find uploads -type f -print0 | xargs -0 -n 2000 -P 2 b3sum")
base_t=$(time_it "rm -f bench.db bench.db-wal bench.db-shm" "$bin -q --config watcher.toml scan")
"$bin" -q --config watcher.toml scan >/dev/null
rescan_t=$(time_it ":" "$bin -q --config watcher.toml scan")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "tree: $files files of 8 KiB; median of $runs warm runs"
printf '%-34s %9s   %-40s %9s %7s\n' measure optiwatch reference "ref (s)" ratio
printf '%-34s %9s   %-40s %9s %7s\n' "unchanged re-scan" "$rescan_t" "find -printf '%s %T@ %i'" "$find_t" "$(ratio "$rescan_t" "$find_t")"
printf '%-34s %9s   %-40s %9s %7s\n' "baseline scan (hash everything)" "$base_t" "b3sum, 2 processes" "$b3_t" "$(ratio "$base_t" "$b3_t")"
