#!/usr/bin/env bash
# Real-shape architecture benchmark: generates random-weight GGUFs in the shapes of Qwen3-0.6B,
# Gemma-3-1B, Phi-3-mini (8 of 32 layers) and GPT-2 124M plus, for each, a llama "twin" with the
# same matmul weight bytes (bench/gen-shape-model.cpp), then runs `llmthreads bench --pp 512
# --tg 128` on every pair, interleaved (ROUNDS rounds; in each, every model once, the order of a
# pair alternating between rounds), and prints a markdown table of the medians over the rounds:
# architecture x (pp512, tg128, ratio to the llama twin).
#
#   scripts/bench-shapes.sh BUILD OUTDIR [ROUNDS]
#
# BUILD: a CMake build folder (the gen-shape-model target is built there if missing);
# OUTDIR: where the models (about 4 GB in all; kept and reused) and the per-run JSON go.
# Environment: THREADS (default 2), TYPE (q8_0 | f16, default q8_0), PRESETS (default all four),
# PP / TG (default 512 / 128), BENCH_ARGS (extra `llmthreads bench` flags).
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
def figs(p, v):
    pps, tgs, arch, isa = [], [], None, None
    for r in range(1, rounds + 1):
        j = json.load(open(f"{out}/runs/{p}-{v}-{r}.json"))
        pps.append(j["pp"]["tok_s"]["median"])
        tgs.append(j["tg"]["tok_s"]["median"])
        arch, isa = j["model_shape"]["arch"], j["isa"]
        mb = j["matmul_bytes_per_token"] / 1e6
    return statistics.median(pps), statistics.median(tgs), arch, isa, mb, pps, tgs
print(f"| model ({wtype}) | arch | MB/token | pp{pp} t/s | tg{tg} t/s | pp ratio | tg ratio |")
print("|---|---|---|---|---|---|---|")
for p in presets:
    a = figs(p, "arch")
    l = figs(p, "llama")
    print(f"| {p} | {a[2]} | {a[4]:.0f} | {a[0]:.1f} | {a[1]:.2f} | {a[0] / l[0]:.2f} | {a[1] / l[1]:.2f} |")
    print(f"| {p} llama twin | llama | {l[4]:.0f} | {l[0]:.1f} | {l[1]:.2f} | 1 | 1 |")
print()
print(f"tier {a[3]}; medians of {rounds} interleaved rounds (ratio = arch / llama twin). Per round:")
for p in presets:
    for v in ("arch", "llama"):
        f = figs(p, v)
        print(f"- {p} {v}: pp {' '.join(f'{x:.1f}' for x in f[5])}; tg {' '.join(f'{x:.2f}' for x in f[6])}")
EOF
