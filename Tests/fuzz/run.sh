#!/usr/bin/env bash
# Builds the libFuzzer targets against a libvpipe.so and runs each for a set time.
#
#   Tests/fuzz/run.sh LIBDIR SECONDS [TARGET...]
#
# LIBDIR holds the libvpipe.so to fuzz: the release library (`make test`: a short run that
# mutates the seed corpus; the library carries no coverage instrumentation, so libFuzzer's
# guidance comes from the harness alone) or the instrumented one `make fuzz` builds
# (-sanitize=fuzzer,address: coverage-guided, and AddressSanitizer inside the library).
# TARGETS defaults to all: plan evaluate simulate session pipedream checkpoint.
#
# FUZZ_SEED: libFuzzer's seed (`make test` passes 1, so the smoke run explores the same
# inputs in the same order on every machine, a slower one a prefix of them; unset: a new
# seed each run, as `make fuzz` wants). FUZZ_HANG_SECONDS: one input running longer is a
# hang (default 10; `make test` passes 30 for slow or loaded machines).
#
# A crash, an ABI-contract violation (fuzz_contract.h) or a run over FUZZ_HANG_SECONDS (a hang) fails the
# script; libFuzzer saves the input under build/fuzz/artifacts/<target>/ and the message says
# which file and how to replay it. New inputs found go to build/fuzz/corpus/<target>/, never
# into the checked-in seeds (Tests/fuzz/corpus/<target>/).
set -euo pipefail
cd "$(dirname "$0")/../.."
LIBDIR=$(cd "$1" && pwd)
SECONDS_EACH=$2
shift 2
TARGETS=${*:-plan evaluate simulate session pipedream checkpoint}
OUT=${FUZZ_OUT:-build/fuzz}
SEED=${FUZZ_SEED:-0}                 # 0: libFuzzer picks one
HANG=${FUZZ_HANG_SECONDS:-10}
# libFuzzer ships with the Swift toolchain's clang, not with Debian's.
CLANG=${FUZZ_CLANG:-$(dirname "$(readlink -f "$(command -v swift)")")/clang}
CFLAGS="-g -O1 -fuse-ld=lld -fsanitize=fuzzer,address -Iinclude -ISources/CVPipeProto/include -Wall -Wextra -Werror"
LIBS="-L$LIBDIR -lvpipe -Wl,-rpath,$LIBDIR -lprotobuf-c"
mkdir -p "$OUT"

entry() {
    case $1 in
        plan|evaluate|simulate) echo "vp_$1" ;;
        pipedream) echo vp_import_pipedream ;;
    esac
}

build() {
    local t=$1
    if [ "$t" = session ]; then
        "$CLANG" $CFLAGS -o "$OUT/fuzz_$t" Tests/fuzz/fuzz_session.c Sources/CVPipeProto/vpipe.pb-c.c $LIBS
    elif [ "$t" = checkpoint ]; then
        "$CLANG" $CFLAGS -o "$OUT/fuzz_$t" Tests/fuzz/fuzz_checkpoint.c Sources/CVPipeProto/vpipe.pb-c.c $LIBS
    else
        "$CLANG" $CFLAGS -DFUZZ_ENTRY="$(entry "$t")" -o "$OUT/fuzz_$t" Tests/fuzz/fuzz_bytes.c $LIBS
    fi
}

# FUZZ_BUILD_ONLY=1: build the targets and stop (make fuzz-corpus).
if [ -n "${FUZZ_BUILD_ONLY:-}" ]; then
    for t in $TARGETS; do build "$t"; done
    exit 0
fi

failed=0
for t in $TARGETS; do
    [ -d "Tests/fuzz/corpus/$t" ] || { echo "fuzz: unknown target $t (no Tests/fuzz/corpus/$t)"; exit 2; }
    build "$t"
    mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t"
    log="$OUT/fuzz_$t.log"
    # -timeout: a single input running over $HANG s is a hang; -rss_limit_mb: a run that needs
    # more than 4 GiB is a failure too (the harnesses bound what they ask for).
    if "$OUT/fuzz_$t" -max_total_time="$SECONDS_EACH" -seed="$SEED" -timeout="$HANG" -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$OUT/artifacts/$t/" "$OUT/corpus/$t" "Tests/fuzz/corpus/$t" >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
        echo "fuzz $t: ${SECONDS_EACH}s, $runs inputs, no failure"
    else
        failed=1
        artifact=$(ls -t "$OUT/artifacts/$t/" 2>/dev/null | head -1)
        echo "FAIL: fuzz target $t (seed $SEED) found a crash, a contract violation or a hang (> $HANG s)."
        echo "  the input is saved in $OUT/artifacts/$t/$artifact"
        echo "  replay it with: $OUT/fuzz_$t $OUT/artifacts/$t/$artifact"
        echo "  libFuzzer's report ($log):"
        grep -E "ERROR|SUMMARY|fuzz: ABI|Fatal error|timeout|deadly" "$log" | head -20 | sed 's/^/    /'
    fi
done
exit $failed
