#!/bin/sh
# RUSTC_WRAPPER of the fuzz build: libFuzzer's coverage instrumentation (SanitizerCoverage,
# stable codegen flags, no sanitizer runtime) for bosun's own crates only, so that the fuzzer
# explores bosun's code rather than its dependencies'.
rustc=$1
shift
case " $* " in
*" --crate-name bosun "* | *" --crate-name bosun_runtime "*)
    exec "$rustc" "$@" -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares
    ;;
esac
exec "$rustc" "$@"
