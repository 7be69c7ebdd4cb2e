#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ and runs each for a bounded time: `manifest` (a static
# pod file through parsing, defaulting, validation and translation), `request` (a kubelet API
# request line: path normalisation, verb, authorization attributes, routing, query parsers) and
# `spdy` (SPDY/3.1 frames and header blocks). Stable toolchain: fuzz/rustc-wrapper.sh adds
# SanitizerCoverage to bosun's own crates (no sanitizer runtime; libfuzzer-sys brings libFuzzer,
# built with the C++ compiler). The corpus grows across runs under $BOSUN_CACHE/fuzz-corpus;
# every clean run is added to its runs.log. A failing input is kept under
# $CARGO_TARGET_DIR/fuzz/artifacts/<target>/ (replay: <binary> <file>).
# Usage: hack/fuzz.sh [SECONDS_PER_TARGET (20)] [TARGET...], or hack/fuzz.sh build (only build).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest request spdy)
out=$CARGO_TARGET_DIR/fuzz
corpus=$BOSUN_CACHE/fuzz-corpus
# The fuzz workspace patches what the main one patches (third_party/).
patches() { sed -n '/^\[patch.crates-io\]/,/^\[/p' "$1" | grep -v '^\[' | sed 's|"\.\./|"|'; }
if [ "$(patches Cargo.toml)" != "$(patches fuzz/Cargo.toml)" ]; then
    echo "fuzz: fuzz/Cargo.toml's [patch.crates-io] differs from Cargo.toml's; copy it (paths with ../)" >&2
    exit 1
fi
# The fuzz workspace resolves exactly what the main one does: its lock is the main lock, to
# which cargo adds libfuzzer-sys and arbitrary (never committed, so it cannot go stale).
cp Cargo.lock fuzz/Cargo.lock
(cd fuzz && RUSTC_WRAPPER="$PWD/rustc-wrapper.sh" CARGO_TARGET_DIR="$out" cargo build --bins -q)
[ "$secs" != build ] || exit 0
for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t" "$out/artifacts/$t"
    if ! "$out/debug/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$out/artifacts/$t/" -print_final_stats=1 \
        "$corpus/$t" "fuzz/seeds/$t" >"$out/$t.log" 2>&1; then
        tail -40 "$out/$t.log"
        echo "fuzz: $t failed; the input is in $out/artifacts/$t/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log")
    echo "fuzz: $t clean for ${secs}s: ${runs:-?} inputs, corpus $(ls "$corpus/$t" | wc -l)"
    echo "$(date -u +%FT%TZ) $t $secs ${runs:-0}" >>"$corpus/runs.log"
done
