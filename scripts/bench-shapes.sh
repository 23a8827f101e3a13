#!/usr/bin/env bash
# Real-shape architecture benchmark: generates random-weight GGUFs in the shapes of Qwen3-0.6B,
# Gemma-3-1B, Phi-3-mini (8 of 32 layers) and GPT-2 124M plus, for each, a llama "twin" with the
# same matmul weight bytes (bench/gen-shape-model.cpp), then runs `llmthreads bench --pp 512
# --tg 128` on every pair, interleaved (ROUNDS rounds; in each, every model once, the two models
# of a pair back to back, their order alternating between rounds), and prints a markdown table:
# architecture x (pp512, tg128: medians over the rounds; ratio to the llama twin: the median of
# the per-round ratios).
#
#   scripts/bench-shapes.sh BUILD OUTDIR [ROUNDS]
#
# BUILD: a CMake build folder (the gen-shape-model target is built there if missing);
# OUTDIR: where the models (about 6 GB in all; kept and reused) and the per-run JSON go.
# Environment: THREADS (default 2), TYPE (q8_0 | f16, default q8_0), PRESETS (default all four),
# PP / TG (default 512 / 128), BENCH_ARGS (extra `llmthreads bench` flags), TABLE_ONLY=1 (no
# runs: the table of the runs already in OUTDIR/runs).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD OUTDIR [ROUNDS]" >&2
  exit 2
fi
build=$1
out=$2
rounds=${3:-3}
threads=${THREADS:-2}
type=${TYPE:-q8_0}
pp=${PP:-512}
tg=${TG:-128}
presets=${PRESETS:-"qwen3-0.6b gemma3-1b phi3-mini-8l gpt2-124m"}
mkdir -p "$out"
if [ ! -x "$build/gen-shape-model" ]; then
  cmake --build "$build" -j2 --target gen-shape-model >&2
fi
gen=$build/gen-shape-model
cli=$build/llmthreads

for p in $presets; do
  for variant in arch llama; do
    f=$out/$p-$variant-$type.gguf
    if [ ! -s "$f" ]; then
      flag=()
      [ "$variant" = llama ] && flag=(--llama-twin)
      echo "generating $f" >&2
      "$gen" --preset "$p" "${flag[@]}" --type "$type" -o "$f.tmp" > "$f.json"
      mv "$f.tmp" "$f"
    fi
  done
done

# One run: pp and tg tokens/s into $out/runs/<preset>-<variant>-<round>.json.
mkdir -p "$out/runs"
for r in $(seq 1 "$rounds"); do
  [ -n "${TABLE_ONLY:-}" ] && break
  for p in $presets; do
    order="arch llama"
    [ $((r % 2)) -eq 0 ] && order="llama arch"
    for variant in $order; do
      echo "round $r/$rounds: $p $variant" >&2
      # shellcheck disable=SC2086
      "$cli" bench -m "$out/$p-$variant-$type.gguf" -t "$threads" --pp "$pp" --tg "$tg" -r 1 \
        ${BENCH_ARGS:-} > "$out/runs/$p-$variant-$r.json" 2> "$out/runs/$p-$variant-$r.log"
    done
  done
done

python3 - "$out" "$rounds" "$type" "$pp" "$tg" $presets <<'EOF'
import json, statistics, sys
out, rounds, wtype, pp, tg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
presets = sys.argv[6:]
def runs(p, v):
    js = [json.load(open(f"{out}/runs/{p}-{v}-{r}.json")) for r in range(1, rounds + 1)]
    return ([j["pp"]["tok_s"]["median"] for j in js], [j["tg"]["tok_s"]["median"] for j in js],
            js[0]["model_shape"]["arch"], js[0]["isa"], js[0]["matmul_bytes_per_token"] / 1e6)
med = statistics.median
def fmt(xs, d):
    return " ".join(f"{x:.{d}f}" for x in xs)
print(f"| model ({wtype}) | arch | MB/token | pp{pp} t/s | tg{tg} t/s | pp ratio | tg ratio |")
print("|---|---|---|---|---|---|---|")
detail = []
for p in presets:
    a, l = runs(p, "arch"), runs(p, "llama")
    # Ratios per round (the two runs of a round are adjacent in time), then their median.
    rpp = [x / y for x, y in zip(a[0], l[0])]
    rtg = [x / y for x, y in zip(a[1], l[1])]
    print(f"| {p} | {a[2]} | {a[4]:.0f} | {med(a[0]):.1f} | {med(a[1]):.2f} | "
          f"{med(rpp):.2f} | {med(rtg):.2f} |")
    print(f"| {p} llama twin | llama | {l[4]:.0f} | {med(l[0]):.1f} | {med(l[1]):.2f} | 1 | 1 |")
    detail.append((p, a, l, rpp, rtg))
print()
print(f"tier {a[3]}; t/s: medians of {rounds} interleaved rounds; ratio: the median over the "
      "rounds of arch / llama twin (the two runs of a round are adjacent). Per round:")
for p, a, l, rpp, rtg in detail:
    print(f"- {p}: pp {fmt(a[0], 1)} vs twin {fmt(l[0], 1)} (ratio {fmt(rpp, 2)}); "
          f"tg {fmt(a[1], 2)} vs twin {fmt(l[1], 2)} (ratio {fmt(rtg, 2)})")
EOF
