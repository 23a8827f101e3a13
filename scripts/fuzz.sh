#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and fuzzes each for a while.
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET ...]     (targets: gguf tokenizer ...)
# Each target starts from its seed corpus (tests/fuzz/corpus/<t> and the seeds generated at build
# time in $build/fuzz-seeds/<t>, copied: neither is modified) plus the regressions (tests/fuzz/regressions/<t>); new coverage goes to
# out/fuzz/corpus/<t>. A crash leaves its input in out/fuzz/artifacts/<t>/ and the script exits 1:
# copy that file into tests/fuzz/regressions/<t>/ with the fix, so every build replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
export LLMT_DATA="${LLMT_DATA:-$(cd .. && pwd)/shared}"
build=${LLMT_FUZZ_BUILD:-build-fuzz}
if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DLLMT_FUZZ=ON -DLLMT_BUILD_TESTS=OFF > /dev/null
fi
cmake --build "$build" -j"$(nproc)" --target fuzz-all
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz-*.cpp; do t=$(basename "$f" .cpp); targets+=("${t#fuzz-}"); done
fi
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in "${targets[@]}"; do
  corpus=out/fuzz/corpus/$t artifacts=out/fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  cp -n "$build"/fuzz-seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  seeds=("$corpus")
  [ -d tests/fuzz/regressions/"$t" ] && seeds+=(tests/fuzz/regressions/"$t")
  dict=()
  [ -f tests/fuzz/"$t".dict ] && dict=(-dict=tests/fuzz/"$t".dict)
  echo "=== fuzz $t for ${seconds}s ==="
  if ! "$build/tests/fuzz/fuzz-$t" "${seeds[@]}" "${dict[@]}" -max_total_time="$seconds" -max_len=65536 \
       -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 -artifact_prefix="$artifacts/" \
       2> "out/fuzz/$t.log"; then
    echo "fuzz $t: FAILED (log out/fuzz/$t.log, inputs in $artifacts/)"
    tail -40 "out/fuzz/$t.log"
    status=1
  else
    grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|cov: " "out/fuzz/$t.log" | tail -4
  fi
done
exit $status
