#!/usr/bin/env bash
# Builds the release artefacts into target/dist/:
#   optiwatch_<version>-1_amd64.deb            (cargo-deb: binary, systemd unit,
#                                               man page, completions, example config)
#   optiwatch-<version>-x86_64-linux-static    (glibc, statically linked)
#   SHA256SUMS
# then prints each step's time and each file's size.
#
#   packaging/build.sh          # two release builds: ~10-20 min on 2 cores
#
# Too slow for every CI run, so .ci/run does not call it; packaging/smoke.sh
# installs the .deb and checks it. Needs cargo, gzip, file, ldd, strip and
# dpkg-deb (dpkg-shlibdeps, when present, fills in the package's Depends).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0 # pinned: a newer cargo-deb may lay the package out differently
TARGET=x86_64-unknown-linux-gnu
pkg=target/pkg   # generated inputs named in Cargo.toml [package.metadata.deb]
dist=target/dist

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$version" ] && [ -n "$target_dir" ] || {
    echo "build.sh: cannot read the version or target directory from cargo" >&2
    exit 1
}

declare -a report=()
step() { # step NAME COMMAND...: runs it and records its wall time
    local name=$1 start end
    shift
    echo "== $name" >&2
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    report+=("$(awk -v n="$name" -v s="$start" -v e="$end" 'BEGIN { printf "%-34s %7.1f s", n, e - s }')")
}

need_cargo_deb() {
    if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
        cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
    fi
}

generate() {
    local bin=$target_dir/release/optiwatch
    rm -rf "$pkg" && mkdir -p "$pkg/completions" "$dist"
    "$bin" man | gzip -9n >"$pkg/optiwatch.1.gz"
    "$bin" completions bash >"$pkg/completions/optiwatch.bash"
    "$bin" completions zsh >"$pkg/completions/_optiwatch"
    "$bin" completions fish >"$pkg/completions/optiwatch.fish"
    # The example unit is for a hand-installed /usr/local/bin/optiwatch.
    sed 's|^ExecStart=/usr/local/bin/optiwatch |ExecStart=/usr/bin/optiwatch |' \
        examples/optiwatch.service >"$pkg/optiwatch.service"
    grep -q '^ExecStart=/usr/bin/optiwatch ' "$pkg/optiwatch.service" || {
        echo "build.sh: examples/optiwatch.service has no ExecStart=/usr/local/bin/optiwatch line to rewrite" >&2
        exit 1
    }
}

static_build() {
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --locked --target "$TARGET" --bin optiwatch
    strip -o "$dist/optiwatch-$version-x86_64-linux-static" \
        "$target_dir/$TARGET/release/optiwatch"
}

# A static glibc binary still loads NSS modules for name lookups: check that
# it runs, is static, and resolves localhost (a failed lookup would say
# "dns error" instead of a refused connection).
check_static() {
    local bin=$dist/optiwatch-$version-x86_64-linux-static tmp out
    out=$(file "$bin")
    echo "file: $out" >&2
    grep -Eq 'statically linked|static-pie linked' <<<"$out" || {
        echo "build.sh: $bin is not static" >&2
        exit 1
    }
    # ldd says "not a dynamic executable" (exit 1) or "statically linked".
    out=$(ldd "$bin" 2>&1 || true)
    echo "ldd: $out" >&2
    if grep -q '=>' <<<"$out"; then
        echo "build.sh: ldd lists shared libraries for $bin" >&2
        exit 1
    fi
    "$bin" --version
    tmp=$(mktemp -d)
    mkdir "$tmp/media"
    printf '[api]\nbase_url = "http://localhost:9/"\nretry_for = "1s"\n[[rules]]\ndir = "media"\nurl = "https://example.com"\n' \
        >"$tmp/watcher.toml"
    out=$(OPTIMOLE_API_KEY=static-check "$bin" -c "$tmp/watcher.toml" -q token 2>&1 || true)
    rm -rf "$tmp"
    if ! grep -qi 'connect' <<<"$out" || grep -qi 'dns' <<<"$out"; then
        echo "build.sh: the static binary could not resolve localhost: $out" >&2
        exit 1
    fi
    echo "static binary resolved localhost (connection refused on port 9, as expected)" >&2
}

step "cargo-deb $CARGO_DEB_VERSION present" need_cargo_deb
step "release build" cargo build --release --locked --bin optiwatch
step "man page, completions, unit" generate
step "cargo deb" cargo deb --no-build --locked -o "$dist/"
step "static build (+crt-static)" static_build
step "static binary checks" check_static

(cd "$dist" && rm -f SHA256SUMS && sha256sum -- *.deb optiwatch-*-static >SHA256SUMS)

echo
printf '%s\n' "${report[@]}"
echo
for f in "$dist"/*.deb "$dist"/optiwatch-*-static "$target_dir/release/optiwatch"; do
    printf '%-60s %10s bytes (%s)\n' "$f" "$(stat -c %s "$f")" "$(du -h "$f" | cut -f1)"
done
echo
dpkg-deb --info "$dist"/optiwatch_"$version"*.deb | sed -n '/Package:/,$p'
dpkg-deb --contents "$dist"/optiwatch_"$version"*.deb
