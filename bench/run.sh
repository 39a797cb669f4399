#!/usr/bin/env bash
# optiwatch benchmark: every performance goal, each figure beside its
# reference measured in the same run, as one aligned table on stdout
# (progress on stderr). See bench/README.md for what each line means.
#
# Usage: bench/run.sh
# Env:   RUNS=3        timed runs per figure (median; plus one untimed warm-up)
#        BENCH_DIR=... work folder; trees found there are reused (kept)
#        BENCH_KEEP=1  keep the temporary work folder when BENCH_DIR is unset
#        BENCH_SMALL=1 skip the 1M-file tree (also skipped below 15 GB free)
#                      and the many-sites trees
#        BENCH_BIN=DIR use DIR/optiwatch and DIR/examples/watch_bench (a
#                      cargo release folder) instead of building
#        BENCH_3M=1    add a 3,000,000 x 1 KiB tree: re-scan, start-up and
#                      memory per file at 100k, 1M and 3M (the scaling curve)
# Needs: cargo, python3, GNU find and /usr/bin/time, and b3sum
#        (cargo install b3sum). Network: 127.0.0.1 only.
set -euo pipefail

runs=${RUNS:-3}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "bench: RUNS must be a positive integer" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${BENCH_DIR:-}" ]; then
  mkdir -p "$BENCH_DIR"
  work=$(cd "$BENCH_DIR" && pwd)
  keep=1
else
  work=$(mktemp -d /tmp/optiwatch-bench.XXXXXX)
  keep=${BENCH_KEEP:-}
fi
api_pid=
cleanup() {
  if [ -n "$api_pid" ]; then kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
  if [ -z "$keep" ]; then rm -rf "$work"; else echo "bench: work folder kept: $work" >&2; fi
}
trap cleanup EXIT

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { echo "bench: $*" >&2; exit 2; }

command -v b3sum >/dev/null || die "b3sum not found: install it with 'cargo install b3sum' (and put ~/.cargo/bin on PATH)"
command -v python3 >/dev/null || die "python3 not found"
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) not found: apt-get install time"
find /dev/null -printf '' 2>/dev/null || die "GNU find (with -printf) is needed"

if [ -n "${BENCH_BIN:-}" ]; then
  [ -x "$BENCH_BIN/optiwatch" ] && [ -x "$BENCH_BIN/examples/watch_bench" ] \
    || die "BENCH_BIN=$BENCH_BIN: no optiwatch and examples/watch_bench there (a cargo release folder)"
  log "using the release build in $BENCH_BIN (not building)"
  built=$BENCH_BIN
else
  log "building optiwatch and examples/watch_bench (release)"
  (cd "$here" && cargo build --release --quiet --bin optiwatch --example watch_bench) \
    || die "cargo build --release failed"
  built=$here/target/release
fi
# Snapshots, so that a rebuild by someone else during the run changes nothing.
mkdir -p "$work/bin"
rm -f "$work/bin/optiwatch" "$work/bin/watch_bench"
cp "$built/optiwatch" "$built/examples/watch_bench" "$work/bin/"
bin="$work/bin/optiwatch"
wbench="$work/bin/watch_bench"
export WATCH_BENCH_BIN=$bin
rev=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$here" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  rev="$rev + uncommitted changes"
fi

# The fake API's key (tests/it/support/fake_api.rs GOOD_KEY); scans without
# changes never send it anywhere.
export OPTIMOLE_API_KEY=opt_test_key_1234567890

# ---------------------------------------------------------------- helpers

# gen_tree DIR FILES BIG: DIR/uploads with FILES files of 8 KiB in YYYY/MM
# folders (an 8-byte counter + a shared random block, so every file differs)
# and BIG random files of 50 MiB. Reused when DIR/.complete says so.
gen_tree() {
  local dir=$1 files=$2 big=$3 fsize=${4:-8192} want="$2 files, $3 x 50 MiB"
  [ "$fsize" = 8192 ] || want="$want, $fsize B each"
  if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$want" ]; then
    log "reusing $dir/uploads ($want)"
    return
  fi
  log "generating $dir/uploads: $want ..."
  rm -rf "$dir/uploads" "$dir/.complete"
  mkdir -p "$dir/uploads"
  python3 - "$dir/uploads" "$files" "$big" "$fsize" <<'PY'
import os, sys
from multiprocessing import Process
root, n, big, fsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
block = os.urandom(fsize)[8:]
def part(p, parts):
    made, flags = set(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for i in range(p, n, parts):
        d = f"{root}/{2000 + i % 25}/{i // 25 % 12 + 1:02d}"
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        fd = os.open(f"{d}/image-{i}.jpg", flags, 0o644)
        os.write(fd, i.to_bytes(8, "little") + block)
        os.close(fd)
ps = [Process(target=part, args=(p, 2)) for p in range(2)]
for p in ps: p.start()
for p in ps: p.join()
if any(p.exitcode for p in ps): sys.exit(1)
for k in range(big):
    d = f"{root}/2024/12"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/large-{k}.jpg", "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
PY
  log "syncing to disk (so write-back does not disturb the timings)"
  sync
  echo "$want" > "$dir/.complete"
}

# gen_huge DIR: DIR/uploads/huge.jpg, 1 GiB of random bytes.
gen_huge() {
  local dir=$1
  if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "1 GiB" ]; then
    log "reusing $dir/uploads/huge.jpg"
    return
  fi
  log "generating $dir/uploads/huge.jpg (1 GiB random) ..."
  rm -rf "$dir/uploads" "$dir/.complete"
  mkdir -p "$dir/uploads"
  python3 - "$dir/uploads/huge.jpg" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    for _ in range(64):
        f.write(os.urandom(16 << 20))
PY
  sync
  echo "1 GiB" > "$dir/.complete"
}

# gen_sites DIR: DIR/sites/site-NNN for 300 sites of 3,000 files of 1 KiB
# (900,000 files) in YYYY/MM folders, and two configs over the same files:
# watcher-one.toml (one rule over DIR/sites, store one.db) and
# watcher-many.toml (one rule per site, store many.db).
gen_sites() {
  local dir=$1 want="300 sites x 3000 files"
  if ! { [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$want" ]; }; then
    log "generating $dir/sites: $want of 1 KiB ..."
    rm -rf "$dir/sites" "$dir/.complete"
    mkdir -p "$dir/sites"
    python3 - "$dir/sites" <<'PY'
import os, sys
from multiprocessing import Process
root = sys.argv[1]
block = os.urandom(1024)[8:]
def part(p, parts):
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for s in range(p, 300, parts):
        made = set()
        for i in range(3000):
            d = f"{root}/site-{s:03d}/{2015 + i % 10}/{i // 10 % 12 + 1:02d}"
            if d not in made:
                os.makedirs(d, exist_ok=True)
                made.add(d)
            fd = os.open(f"{d}/image-{i}.jpg", flags, 0o644)
            os.write(fd, (s * 3000 + i).to_bytes(8, "little") + block)
            os.close(fd)
ps = [Process(target=part, args=(p, 2)) for p in range(2)]
for p in ps: p.start()
for p in ps: p.join()
if any(p.exitcode for p in ps): sys.exit(1)
PY
    sync
    echo "$want" > "$dir/.complete"
  fi
  printf 'state = "one.db"\n[api]\nbase_url = "http://127.0.0.1:9/api"\n[[rules]]\ndir = "sites"\nurl = "https://example.com/sites"\n' > "$dir/watcher-one.toml"
  {
    printf 'state = "many.db"\n[api]\nbase_url = "http://127.0.0.1:9/api"\n'
    for ((k = 0; k < 300; k++)); do
      printf '[[rules]]\ndir = "sites/site-%03d"\nurl = "https://site-%03d.example.com/uploads"\n' "$k" "$k"
    done
  } > "$dir/watcher-many.toml"
}

# write_config DIR NAME BASE_URL
write_config() {
  cat > "$1/$2" <<TOML
state = "bench.db"
[api]
base_url = "$3"
[[rules]]
dir = "uploads"
url = "https://example.com/uploads"
TOML
}

rm_store() { rm -f "$1"/bench.db "$1"/bench.db-wal "$1"/bench.db-shm "$1"/bench.db.lock; }

# The commands being compared. stdout goes to /dev/null in every case.
# The config the commands use in a tree (the many-sites tree has two).
cfgname=watcher.toml
ow_scan() { "$bin" -q --config "$1/$cfgname" scan >/dev/null 2>"$work/scan.err" || {
  echo "bench: optiwatch scan ($1) failed with exit code $?:" >&2; tail -n 20 "$work/scan.err" >&2; exit 1; }; }
ref_find() { find "$1/uploads" -type f -printf '%s %T@ %i\n' >/dev/null; }
ref_b3sum_p2() { find "$1/uploads" -type f -print0 | xargs -0 -P2 -n 2000 b3sum >/dev/null; }
ref_b3sum_one() { b3sum "$1/uploads/huge.jpg" >/dev/null; }
noop() { :; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.6f\n", a[int((NR+1)/2)]}'; }

# time_set ARG SETUP1 CMD1 [SETUP2 CMD2 ...]: one untimed warm-up of each
# contender, then RUNS rounds in which the contenders take turns (so that
# noise from other processes hits them alike); SETUPs run untimed before their
# command. Prints each contender's median wall time in seconds, in order. A
# command may set `override_t` (seconds) to report a time it measured itself.
override_t=
time_set() {
  local arg=$1 i j s e t n
  shift
  n=$(($# / 2))
  local args=("$@")
  for ((j = 0; j < n; j++)); do ${args[2 * j]} "$arg"; ${args[2 * j + 1]} "$arg"; done
  : > "$work/times"
  for ((i = 0; i < runs; i++)); do
    for ((j = 0; j < n; j++)); do
      ${args[2 * j]} "$arg"
      override_t=
      s=$EPOCHREALTIME; ${args[2 * j + 1]} "$arg"; e=$EPOCHREALTIME
      t=${override_t:-$(awk -v a="$s" -v b="$e" 'BEGIN {printf "%.6f", b - a}')}
      echo "$j $t" >> "$work/times"
    done
  done
  for ((j = 0; j < n; j++)); do
    awk -v j=$j '$1 == j {print $2}' "$work/times" | median
  done | paste -sd' '
}

# max_rss_kib DIR: peak RSS (KiB) of one `optiwatch scan` in DIR.
max_rss_kib() {
  /usr/bin/time -f %M -o "$work/rss" "$bin" -q --config "$1/$cfgname" scan >/dev/null 2>"$work/scan.err" || {
    echo "bench: optiwatch scan ($1) failed:" >&2; tail -n 20 "$work/scan.err" >&2; exit 1; }
  tail -n 1 "$work/rss"
}

# start_api: the fake Optimole API (examples/watch_bench serve mode), on
# 127.0.0.1; writes DIR/watcher-api.toml configs pointing at it.
api_url=
start_api() {
  [ -n "$api_pid" ] && return
  : > "$work/api.log"
  WATCH_BENCH_ONLY=serve "$wbench" > "$work/api.log" 2>&1 &
  api_pid=$!
  for _ in $(seq 200); do
    api_url=$(sed -n 's/^bench serve base_url=\([^ ]*\).*/\1/p' "$work/api.log")
    [ -n "$api_url" ] && break
    sleep 0.05
  done
  [ -n "$api_url" ] || die "the fake API did not start: $(cat "$work/api.log")"
  log "fake API at $api_url (pid $api_pid)"
}
api_assets() { grep -c '^bench request method=POST path=/invalidate/asset status=200 assets=1$' "$work/api.log" || true; }

# store_writes DIR: RUNS scans (after one untimed warm-up) that each find one
# changed file (same size and inode, new content) and invalidate it at the
# fake API; sets sw_wchar and sw_wbytes to the medians for the scan process.
# (Runs in the main shell: start_api must set api_pid there.)
store_writes() {
  local dir=$1 i before after out
  start_api
  write_config "$dir" watcher-api.toml "$api_url"
  for ((i = 0; i <= runs; i++)); do
    python3 - "$dir/uploads/2000/01/image-0.jpg" <<'PY'
import os, sys, time
with open(sys.argv[1], "r+b") as f:
    f.write(time.time_ns().to_bytes(8, "little"))
PY
    sync
    before=$(api_assets)
    out=$(python3 - "$bin" -q --config "$dir/watcher-api.toml" scan <<'PY'
import subprocess, sys
def io():
    d = dict(l.split(": ") for l in open("/proc/self/io").read().splitlines())
    return int(d["wchar"]), int(d["write_bytes"])
a = io()
# Reaped children's I/O is added to the parent's /proc/self/io.
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
b = io()
print(rc, b[0] - a[0], b[1] - a[1])
PY
    ) 2>"$work/scan.err"
    [ "${out%% *}" = 0 ] || { echo "bench: change scan ($dir) failed:" >&2; tail -n 20 "$work/scan.err" >&2; exit 1; }
    for _ in $(seq 50); do after=$(api_assets); [ "$after" -gt "$before" ] && break; sleep 0.05; done
    [ "$after" -eq $((before + 1)) ] || die "change scan ($dir): expected exactly one invalidated asset, the fake API saw $((after - before))"
    [ "$i" -gt 0 ] && echo "${out#* }"
  done > "$work/writes"
  sw_wchar=$(cut -d' ' -f1 "$work/writes" | median)
  sw_wbytes=$(cut -d' ' -f2 "$work/writes" | median)
}

# ow_watch_start DIR: one start-up of `optiwatch watch` until its "watching"
# line (timed inside watch_bench); keeps the highest VmHWM seen (and the VmRSS
# of that start-up) in watch_hwm / watch_rss, the file count in watch_files.
watch_hwm=0 watch_rss=0 watch_files=0
ow_watch_start() {
  WATCH_BENCH_ONLY=startup WATCH_BENCH_CONFIG="$1/$cfgname" \
    "$wbench" > "$work/startup" 2>"$work/startup.err" || {
    echo "bench: watch start-up ($1) failed:" >&2; tail -n 20 "$work/startup.err" "$work/startup" >&2; exit 1; }
  local us rss hwm files
  read -r us rss hwm files < <(sed -n 's/^bench startup .*elapsed_us=\([0-9]*\) vmrss_kib=\([0-9]*\) vmhwm_kib=\([0-9]*\) .*files=\([0-9]*\).*/\1 \2 \3 \4/p' "$work/startup")
  [ -n "$us" ] || die "cannot parse watch_bench start-up output: $(cat "$work/startup")"
  override_t=$(awk -v u="$us" 'BEGIN {printf "%.6f", u / 1e6}')
  if [ "$hwm" -gt "$watch_hwm" ]; then watch_hwm=$hwm watch_rss=$rss; fi
  watch_files=$files
}

# ------------------------------------------------------------ measurements
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

declare -A R   # results by name
notes=()

cd "$work"
t100=$work/t100k t1m=$work/t1m thuge=$work/t1gib
mkdir -p "$t100" "$t1m" "$thuge"

# Decide about the 1M tree first, so a skip is known early.
big=1 skip_reason=
if [ -n "${BENCH_SMALL:-}" ]; then
  big=0 skip_reason="BENCH_SMALL=1"
elif ! { [ -f "$t1m/.complete" ] && [ "$(cat "$t1m/.complete")" = "1000000 files, 0 x 50 MiB" ]; }; then
  free_kib=$(df -Pk "$work" | awk 'NR == 2 {print $4}')
  if [ "$free_kib" -lt $((15 * 1024 * 1024)) ]; then
    big=0 skip_reason="only $((free_kib / 1024 / 1024)) GB free in $work (15 GB needed)"
  fi
fi
[ "$big" = 1 ] || log "skipping the 1M-file tree: $skip_reason"

# ---- 100k tree
gen_tree "$t100" 100000 3
write_config "$t100" watcher.toml "http://127.0.0.1:9/api"
rm_store "$t100"
log "100k: b3sum (2 processes) and optiwatch baseline scan, taking turns (warm-up + $runs runs)"
time_set "$t100" noop ref_b3sum_p2 rm_store ow_scan > "$work/set"
read -r R[b3_100] R[base100] < "$work/set"
log "100k: find -printf, optiwatch unchanged re-scan and watch start-up, taking turns"
watch_hwm=0
time_set "$t100" noop ref_find noop ow_scan noop ow_watch_start > "$work/set"
read -r R[find100] R[rescan100] R[startup100] < "$work/set"
R[whwm100]=$watch_hwm R[wrss100]=$watch_rss R[wfiles100]=$watch_files
log "100k: peak memory of scan"
R[rss_rescan100]=$(max_rss_kib "$t100")
rm_store "$t100"
R[rss_base100]=$(max_rss_kib "$t100")
log "100k: store writes of a scan with one changed file"
store_writes "$t100"
R[wchar100]=$sw_wchar R[wbytes100]=$sw_wbytes

# ---- 1 GiB file
gen_huge "$thuge"
write_config "$thuge" watcher.toml "http://127.0.0.1:9/api"
log "1 GiB: b3sum and optiwatch baseline scan, taking turns"
time_set "$thuge" noop ref_b3sum_one rm_store ow_scan > "$work/set"
read -r R[b3_huge] R[ow_huge] < "$work/set"
rm_store "$thuge"

# ---- 1M tree
if [ "$big" = 1 ]; then
  gen_tree "$t1m" 1000000 0
  write_config "$t1m" watcher.toml "http://127.0.0.1:9/api"
  rm_store "$t1m"
  log "1M: optiwatch baseline scan (peak memory)"
  s=$EPOCHREALTIME
  R[rss_base1m]=$(max_rss_kib "$t1m")
  R[base1m]=$(awk -v a="$s" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.6f", b - a}')
  log "1M: find -printf, optiwatch unchanged re-scan and watch start-up, taking turns (warm-up + $runs runs)"
  watch_hwm=0
  time_set "$t1m" noop ref_find noop ow_scan noop ow_watch_start > "$work/set"
  read -r R[find1m] R[rescan1m] R[startup1m] < "$work/set"
  R[whwm1m]=$watch_hwm R[wrss1m]=$watch_rss R[wfiles1m]=$watch_files
  log "1M: peak memory of an unchanged re-scan"
  R[rss_rescan1m]=$(max_rss_kib "$t1m")
  log "1M: store writes of a scan with one changed file"
  store_writes "$t1m"
  R[wchar1m]=$sw_wchar R[wbytes1m]=$sw_wbytes
  R[store1m]=$(du -cb "$t1m"/bench.db* | tail -n 1 | cut -f1)
fi

# ---- 3M tree (BENCH_3M=1): the scaling curve
scale=0 scale_reason="BENCH_3M=1 not set"
t3m=$work/t3m
if [ -n "${BENCH_3M:-}" ]; then
  if [ "$big" != 1 ]; then
    scale_reason="needs the 1M tree ($skip_reason)"
  elif [ -f "$t3m/.complete" ] && [ "$(cat "$t3m/.complete")" = "3000000 files, 0 x 50 MiB, 1024 B each" ]; then
    scale=1
  else
    free_inodes=$(df -Pi "$work" | awk 'NR == 2 {print $4}')
    free_kib=$(df -Pk "$work" | awk 'NR == 2 {print $4}')
    if [ "$free_inodes" -lt 3200000 ]; then
      scale_reason="only $free_inodes free inodes in $work (3,200,000 needed)"
    elif [ "$free_kib" -lt $((16 * 1024 * 1024)) ]; then
      scale_reason="only $((free_kib / 1024 / 1024)) GB free in $work (16 GB needed)"
    else
      scale=1
    fi
  fi
  [ "$scale" = 1 ] || log "skipping the 3M-file tree: $scale_reason"
fi
if [ "$scale" = 1 ]; then
  mkdir -p "$t3m"
  gen_tree "$t3m" 3000000 0 1024
  write_config "$t3m" watcher.toml "http://127.0.0.1:9/api"
  if ! [ -f "$t3m/bench.db" ]; then
    log "3M: optiwatch baseline scan"
    ow_scan "$t3m"
  fi
  log "3M: find -printf, optiwatch unchanged re-scan and watch start-up, taking turns (warm-up + $runs runs)"
  watch_hwm=0
  time_set "$t3m" noop ref_find noop ow_scan noop ow_watch_start > "$work/set"
  read -r R[find3m] R[rescan3m] R[startup3m] < "$work/set"
  R[whwm3m]=$watch_hwm R[wfiles3m]=$watch_files
  log "3M: peak memory of an unchanged re-scan"
  R[rss_rescan3m]=$(max_rss_kib "$t3m")
fi

# ---- many sites: 300 rules x 3,000 files against one rule over the same 900,000
sites=0
tsites=$work/tsites
if [ "$big" = 1 ]; then
  sites=1
  mkdir -p "$tsites"
  gen_sites "$tsites"
  for c in one many; do
    cfgname=watcher-$c.toml
    if ! [ -f "$tsites/$c.db" ]; then
      log "sites: baseline scan, $c"
      ow_scan "$tsites"
    fi
  done
  log "sites: re-scan and watch start-up, one rule and 300 rules, taking turns (warm-up + $runs runs)"
  scan_one() { cfgname=watcher-one.toml ow_scan "$1"; }
  scan_many() { cfgname=watcher-many.toml ow_scan "$1"; }
  start_one() { cfgname=watcher-one.toml ow_watch_start "$1"; }
  start_many() { cfgname=watcher-many.toml ow_watch_start "$1"; }
  time_set "$tsites" noop scan_one noop scan_many noop start_one noop start_many > "$work/set"
  read -r R[s_scan1] R[s_scan300] R[s_start1] R[s_start300] < "$work/set"
  cfgname=watcher.toml
fi

# ---- watch latency and request count (fake API in watch_bench)
log "watch: latency (200 edits), a burst of 10,000 edits, 60 s of sustained change (about 5 minutes)"
WATCH_BENCH_ONLY=latency,burst,tokens WATCH_BENCH_SAMPLES=200 WATCH_BENCH_BURST=10000 \
  "$wbench" > "$work/watch" 2>"$work/watch.err" || {
  echo "bench: watch_bench failed:" >&2; tail -n 20 "$work/watch.err" >&2; exit 1; }
kv() { sed -n "s/^bench $1 .*\\b$2=\\([0-9]*\\).*/\\1/p" "$work/watch"; }
R[lat_p50]=$(kv latency p50_us) R[lat_p99]=$(kv latency p99_us) R[lat_max]=$(kv latency max_us)
R[lat_n]=$(kv latency samples) R[debounce]=$(kv latency debounce_us)
R[inv_sent]=$(kv burst invalidate_sent) R[inv_ok]=$(kv burst invalidate_ok)
R[tok_sent]=$(kv burst token_sent) R[assets]=$(kv burst assets)
R[tk_during]=$(kv tokens tokens_during) R[tk_after]=$(kv tokens tokens_after) R[tk_p99]=$(kv tokens p99_us)
R[tk_interval]=$(kv tokens interval_us) R[tk_missing]=$(kv tokens missing) R[tk_edits]=$(kv tokens edits)

# ------------------------------------------------------------------ table

secs() { awk -v v="$1" 'BEGIN {printf "%.3f s", v}'; }
kib() { awk -v v="$1" 'BEGIN {printf "%.1f KiB", v / 1024}'; }
mib_kib() { awk -v v="$1" 'BEGIN {printf "%.1f MiB", v / 1024}'; }
ms_us() { awk -v v="$1" 'BEGIN {printf "%.1f ms", v / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "n/a"}'; }
# le A B: "yes" when A <= B, else "NO" (a trailing x on A is ignored).
le() { awk -v a="${1%x}" -v b="$2" 'BEGIN {print (a + 0 <= b + 0) ? "yes" : "NO"}'; }
bpf() { awk -v k="$1" -v n="$2" 'BEGIN {printf "%.0f", k * 1024 / n}'; }

# ---- papirus-icon-theme (issue 12: links), when its tree is at hand
# (OPTIWATCH_PAPIRUS or /work/data/papirus: `apt-get download
# papirus-icon-theme && dpkg -x papirus-icon-theme_*.deb DIR`). Reference: the
# same tree with every link removed (a walk that ignores links entirely).
pap_src=${OPTIWATCH_PAPIRUS:-/work/data/papirus}/usr/share/icons
pap=0
if [ -d "$pap_src" ]; then
  pap=1
  tpl=$work/tpap-links tpn=$work/tpap-nolinks
  for t in "$tpl" "$tpn"; do
    if [ ! -f "$t/.complete" ]; then
      log "papirus: copying the tree to $t"
      rm -rf "$t" && mkdir -p "$t" && cp -a "$pap_src" "$t/uploads"
      [ "$t" = "$tpn" ] && find "$t/uploads" -type l -delete
      echo done > "$t/.complete"
    fi
    write_config "$t" watcher.toml "http://127.0.0.1:9/api"
    echo 'include = ["*.svg"]' >> "$t/watcher.toml"
  done
  # time_set passes one folder to every contender: these name theirs.
  rm_pl() { rm_store "$tpl"; }
  rm_pn() { rm_store "$tpn"; }
  scan_pl() { ow_scan "$tpl"; }
  scan_pn() { ow_scan "$tpn"; }
  log "papirus: baseline scan with links and without, taking turns (warm-up + $runs runs)"
  time_set - rm_pl scan_pl rm_pn scan_pn > "$work/set"
  read -r R[pap_base] R[papn_base] < "$work/set"
  log "papirus: unchanged re-scan with links and without, taking turns"
  time_set - noop scan_pl noop scan_pn > "$work/set"
  read -r R[pap_rescan] R[papn_rescan] < "$work/set"
  rm_store "$tpl"; R[pap_rss]=$(max_rss_kib "$tpl")
  rm_store "$tpn"; R[papn_rss]=$(max_rss_kib "$tpn")
  R[pap_links]=$(find "$tpl/uploads" -type l | wc -l)
fi

rows=()
row() { local IFS=$'\t'; rows+=("$*"); }
# timed LABEL VALUE_S REFNAME REF_S LIMIT: a time against a reference time.
timed() {
  local r; r=$(ratio "$2" "$4")
  row "$1" "$(secs "$2")" "$3" "$(secs "$4")" "$r" "<= ${5}x" "$(le "$r" "$5")"
}
# memory LABEL KIB REFNAME FILES [info]
memory() {
  local b; b=$(bpf "$2" "$4")
  if [ -n "${5:-}" ]; then row "$1" "$(mib_kib "$2")" "$3" "$4 files" "$b B/file" "(info)" "-"
  else row "$1" "$(mib_kib "$2")" "$3" "$4 files" "$b B/file" "<= 100 B/file" \
    "$(awk -v k="$2" -v n="$4" 'BEGIN {print (k * 1024 / n <= 100) ? "yes" : "NO"}')"; fi
}

find_ref="find -type f -printf '%s %T@ %i\\n'"
if [ "$big" = 1 ]; then
  timed "watch start-up to \"watching\", 1M files" "${R[startup1m]}" "unchanged re-scan, 1M files" "${R[rescan1m]}" 1.1
else
  timed "watch start-up to \"watching\", 100k* files" "${R[startup100]}" "unchanged re-scan, 100k files" "${R[rescan100]}" 1.1
fi
timed "unchanged re-scan, 100k files" "${R[rescan100]}" "$find_ref" "${R[find100]}" 0.7
if [ "$big" = 1 ]; then
  timed "unchanged re-scan, 1M files" "${R[rescan1m]}" "$find_ref" "${R[find1m]}" 0.7
else
  row "unchanged re-scan, 1M files" "n/a" "$find_ref" "n/a" "n/a" "<= 0.7x" "n/a: $skip_reason"
fi
timed "baseline scan (hash all), 100k files" "${R[base100]}" "b3sum, 2 processes (xargs -P2)" "${R[b3_100]}" 1.0
timed "baseline scan, one 1 GiB file" "${R[ow_huge]}" "b3sum FILE" "${R[b3_huge]}" 1.1
if [ "$pap" = 1 ]; then
  timed "papirus baseline, ${R[pap_links]} links" "${R[pap_base]}" "same tree, links removed" "${R[papn_base]}" 1.2
  r=$(ratio "${R[pap_rss]}" "${R[papn_rss]}")
  row "  its peak RSS" "$(mib_kib "${R[pap_rss]}")" "same tree, links removed" "$(mib_kib "${R[papn_rss]}")" \
    "$r" "<= 1.2x" "$(le "$r" 1.2)"
  row "  papirus unchanged re-scan" "$(secs "${R[pap_rescan]}")" "same tree, links removed" \
    "$(secs "${R[papn_rescan]}")" "$(ratio "${R[pap_rescan]}" "${R[papn_rescan]}")" "(info)" "-"
else
  row "papirus baseline (links)" "n/a" "same tree, links removed" "n/a" "n/a" "<= 1.2x" "n/a: no tree at $pap_src"
fi
if [ "$big" = 1 ]; then
  n=1000000 tag=1M sfx=1m
else
  n=100003 tag="100k*" sfx=100
fi
memory "peak RSS, scan re-scan, $tag files" "${R[rss_rescan$sfx]}" "max RSS / tracked files" "$n"
memory "peak RSS, scan baseline, $tag files" "${R[rss_base$sfx]}" "max RSS / tracked files" "$n"
wf=${R[wfiles$sfx]:-0}; [ "$wf" -gt 0 ] || wf=$n
memory "peak RSS, watch after start-up, $tag files" "${R[whwm$sfx]}" "VmHWM / tracked files" "$wf"
memory "  resident then (VmRSS)" "${R[wrss$sfx]}" "VmRSS / tracked files" "$wf" info
for m in wchar:wchar wbytes:write_bytes; do
  key=${m%%:*} name=${m#*:}
  if [ "$big" = 1 ]; then
    r=$(ratio "${R[${key}1m]}" "${R[${key}100]}")
    row "store writes, 1-change scan, $name" "$(kib "${R[${key}1m]}") (1M)" "same scan, 100k store" \
      "$(kib "${R[${key}100]}")" "$r" "~1x (<= 1.2x)" "$(le "$r" 1.2)"
  else
    row "store writes, 1-change scan, $name" "n/a (1M)" "same scan, 100k store" \
      "$(kib "${R[${key}100]}")" "n/a" "~1x (<= 1.2x)" "n/a: $skip_reason"
  fi
done
# Per file: microseconds (time) or bytes (memory) per tracked file.
us_pf() { awk -v t="$1" -v n="$2" 'BEGIN {printf "%.2f us/file", t * 1e6 / n}'; }
# flat LABEL A_PER_FILE B_PER_FILE: B (3M) against A (100k), within 1.2x.
flat() {
  local r; r=$(ratio "$3" "$2")
  row "$1" "$(awk -v v="$3" 'BEGIN {printf "%.2f us/file", v}') (3M)" "same, 100k files" \
    "$(awk -v v="$2" 'BEGIN {printf "%.2f us/file", v}')" "$r" "<= 1.2x" "$(le "$r" 1.2)"
}
if [ "$scale" = 1 ]; then
  for sz in 100:100000:100k 1m:1000000:1M 3m:3000000:3M; do
    IFS=: read -r k n label <<< "$sz"
    rss=${R[rss_rescan$k]}
    row "scaling, $label files: re-scan / start-up" "$(us_pf "${R[rescan$k]}" "$n") / $(us_pf "${R[startup$k]}" "$n")" \
      "find -printf" "$(us_pf "${R[find$k]}" "$n")" "$(bpf "$rss" "$n") B/file" "(info: peak RSS of re-scan)" "-"
  done
  pf() { awk -v t="$1" -v n="$2" 'BEGIN {printf "%.4f", t * 1e6 / n}'; }
  flat "flat cost per file, re-scan" "$(pf "${R[rescan100]}" 100003)" "$(pf "${R[rescan3m]}" 3000000)"
  flat "flat cost per file, watch start-up" "$(pf "${R[startup100]}" 100003)" "$(pf "${R[startup3m]}" 3000000)"
  memory "peak RSS, scan re-scan, 3M files" "${R[rss_rescan3m]}" "max RSS / tracked files" 3000000
  wf=${R[wfiles3m]:-0}; [ "$wf" -gt 0 ] || wf=3000000
  memory "peak RSS, watch after start-up, 3M files" "${R[whwm3m]}" "VmHWM / tracked files" "$wf"
else
  row "scaling, 100k / 1M / 3M files" "n/a" "" "" "" "flat within 1.2x" "n/a: $scale_reason"
fi
if [ "$sites" = 1 ]; then
  timed "many sites: re-scan, 300 rules x 3,000 files" "${R[s_scan300]}" "one rule, the same 900,000 files" "${R[s_scan1]}" 1.2
  timed "many sites: watch start-up, 300 rules" "${R[s_start300]}" "one rule, the same 900,000 files" "${R[s_start1]}" 1.2
  row "  per-rule overhead, re-scan / start-up" \
    "$(awk -v a="${R[s_scan300]}" -v b="${R[s_scan1]}" -v c="${R[s_start300]}" -v d="${R[s_start1]}" \
      'BEGIN {printf "%.2f ms / %.2f ms", (a - b) * 1000 / 299, (c - d) * 1000 / 299}')" \
    "(300 rules - 1 rule) / 299" "" "" "(info)" "-"
else
  row "many sites: 300 rules x 3,000 files" "n/a" "one rule, 900,000 files" "n/a" "n/a" "<= 1.2x" "n/a: $skip_reason"
fi
deb=${R[debounce]}
row "change -> request latency, p50" "$(ms_us "${R[lat_p50]}")" "configured debounce" "$(ms_us "$deb")" \
  "$(ratio "${R[lat_p50]}" "$deb")" "(info)" "-"
row "change -> request latency, p99" "$(ms_us "${R[lat_p99]}")" "configured debounce" "$(ms_us "$deb")" \
  "$(ratio "${R[lat_p99]}" "$deb")" "<= $(ms_us $((deb + 100000)))" "$(le "${R[lat_p99]}" $((deb + 100000)))"
row "API requests, 10,000 changed files" "${R[inv_sent]} + ${R[tok_sent]} token" "minimum (100 assets/request)" "100" \
  "$(ratio "${R[inv_sent]}" 100)" "100 + <= 1 token" \
  "$( [ "${R[inv_sent]}" = 100 ] && [ "${R[tok_sent]}" -le 1 ] && [ "${R[assets]}" = 10000 ] && echo yes || echo NO)"
tki=${R[tk_interval]}
row "tokens, 60 s of 434 edits/s, 5,000 files" "${R[tk_during]} + ${R[tk_after]} final" "token_interval" "$(ms_us "$tki")" \
  "-" "5-7 + 1 final" \
  "$( [ "${R[tk_during]}" -ge 5 ] && [ "${R[tk_during]}" -le 7 ] && [ "${R[tk_after]}" = 1 ] && [ "${R[tk_missing]}" = 0 ] && echo yes || echo NO)"
row "  accepted invalidation -> next token, p99" "$(ms_us "${R[tk_p99]}")" "token_interval" "$(ms_us "$tki")" \
  "$(ratio "${R[tk_p99]}" "$tki")" "<= $(ms_us $((tki + 2000000)))" "$(le "${R[tk_p99]}" $((tki + 2000000)))"

echo
{
  printf 'measure\toptiwatch\treference\tref value\tratio\tgoal\tmet?\n'
  printf '%s\n' "${rows[@]}"
} | awk -F'\t' '
  { for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR; nf[NR] = NF }
  END {
    for (r = 1; r <= n; r++) {
      line = ""
      for (i = 1; i <= nf[r]; i++) line = line sprintf(i < nf[r] ? "%-" w[i] "s  " : "%s", c[r, i])
      print line
      if (r == 1) { t = 0; for (i = 1; i <= nf[1]; i++) t += w[i] + 2; s = ""; for (i = 1; i < t - 2; i++) s = s "-"; print s }
    }
  }'
echo
echo "notes: times are medians of $runs warm-cache runs (one untimed warm-up each; contenders take turns);"
echo "       wall clock. Trees: 100k = 100,000 x 8 KiB + 3 x 50 MiB random, in YYYY/MM folders;"
echo "       1 GiB = one random file; 1M = 1,000,000 x 8 KiB."
echo "       many sites: 300 sites x 3,000 files x 1 KiB in YYYY/MM folders, one config with one rule per site,"
echo "       one with one rule over all; 3M (BENCH_3M=1) = 3,000,000 x 1 KiB."
if [ "$big" = 1 ]; then
  echo "       1M baseline scan (the memory run; file contents not pre-warmed): $(secs "${R[base1m]}");"
  echo "       1M store on disk: $(awk -v b="${R[store1m]}" 'BEGIN {printf "%.1f MiB", b / 1048576}')."
else
  echo "       * 1M tree skipped ($skip_reason): memory and watch start-up measured on the 100k tree."
fi
echo "       store writes: /proc/PID/io of the scan process (wchar: bytes given to write(2); write_bytes:"
echo "       page-cache bytes dirtied), median of $runs scans that each find 1 changed file and invalidate it."
echo "       latency: ${R[lat_n]} edits, from write+close to the invalidate request arriving at the fake API"
echo "       (max $(ms_us "${R[lat_max]}")); burst: ${R[inv_ok]} invalidate requests accepted, ${R[assets]} assets; fake API on 127.0.0.1."
echo "       tokens: ${R[tk_edits]} edits round robin over 5,000 files; tokens counted before / after the last accepted"
echo "       invalidation; the wait runs from each accepted invalidate request to the next token request."
echo "       load average at start: $load_start; at end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine may be shared)."
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr); optiwatch $rev"
