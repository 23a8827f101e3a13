#!/usr/bin/env bash
# The MPI distribution overhead (issue 12 targets): the classify job over examples/reviews.jsonl on
# the bench model, 1 rank x 2 threads vs 2 ranks x 1 thread (mpirun, TCP), interleaved repeats;
# prints each run's wall time and docs/s, then the medians and the ratio, and rank 0's coordination
# CPU per document from the MPI runs' summary line.
#   bash scripts/bench-mpi.sh [build dir] [repeats]
set -euo pipefail
build=${1:-build}
reps=${2:-3}
data=${LLMT_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
model=$data/models/synth/synth-125m-q4_k_m.gguf
src=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
job=(run -m "$model" --task classify --labels positive,negative,neutral
     --prompt-file "$src/examples/prompts/classify-sentiment.txt" -i "$src/examples/reviews.jsonl"
     --overwrite --progress none)
n=$(grep -c . "$src/examples/reviews.jsonl")
one=() two=()
for ((i = 0; i < reps; i++)); do
  t0=$(date +%s.%N)
  "$build/llmthreads" "${job[@]}" -o "$out/one.jsonl" --threads 2 2> "$out/one.log"
  t1=$(date +%s.%N)
  mpirun -n 2 --bind-to none --mca btl tcp,self --mca btl_tcp_if_include lo \
    "$build/llmthreads" "${job[@]}" -o "$out/two.jsonl" --threads 1 2> "$out/two.log"
  t2=$(date +%s.%N)
  a=$(echo "$t1 - $t0" | bc -l) b=$(echo "$t2 - $t1" | bc -l)
  one+=("$a") two+=("$b")
  cmp -s "$out/one.jsonl" "$out/two.jsonl" || { echo "outputs differ"; exit 1; }
  printf 'repeat %d: 1x2 %.2f s (%.2f docs/s)  2x1 %.2f s (%.2f docs/s)  %s\n' "$i" "$a" \
    "$(echo "$n / $a" | bc -l)" "$b" "$(echo "$n / $b" | bc -l)" \
    "$(grep -o 'rank 0 coordination.*' "$out/two.log")"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
m1=$(median "${one[@]}") m2=$(median "${two[@]}")
printf 'median: 1 rank x 2 threads %.2f s (%.2f docs/s); 2 ranks x 1 thread %.2f s (%.2f docs/s); 2x1 / 1x2 throughput = %.1f%%\n' \
  "$m1" "$(echo "$n / $m1" | bc -l)" "$m2" "$(echo "$n / $m2" | bc -l)" "$(echo "100 * $m1 / $m2" | bc -l)"
rm -rf "$out"
