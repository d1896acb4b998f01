#!/usr/bin/env bash
# Benchmarks of issue "pipeline end to end" (results go to BENCHMARKS.md by hand, with the date).
# Whole-process numbers: `dftg eval chair` on one core over all ten real caption files, and
# `dftg run` peak memory; in-process numbers: the bench targets.
set -euo pipefail
cd "$(dirname "$0")/.."
export DFTG_DATA="${DFTG_DATA:-$(pwd)/../shared/data}"
cargo build --release --locked --bin dftg -q
DFTG=$(pwd)/target/release/dftg
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
cat "$DFTG_DATA"/pope/captions/*.jsonl > "$WORK/all.jsonl"
N=$(wc -l < "$WORK/all.jsonl")
for mode in "" "--compat"; do
  best=()
  for run in 1 2 3 4 5; do
    s=$(date +%s.%N)
    taskset -c 0 "$DFTG" eval chair $mode --captions "$WORK/all.jsonl" --objects "$DFTG_DATA/coco2014-objects/imid_to_objects.json" > /dev/null
    e=$(date +%s.%N)
    best+=("$(echo "$N / ($e - $s)" | bc -l)")
  done
  med=$(printf '%s\n' "${best[@]}" | sort -g | sed -n 3p)
  printf 'eval chair %-9s whole process, 1 core, %d captions: median %.0f captions/s (runs: %s)\n' "${mode:-(own)}" "$N" "$med" "$(printf '%.0f ' "${best[@]}")"
done
# peak memory of the embedded pipeline on a 2000-image synthetic corpus, zero-latency simulator
"$DFTG" corpus synth --images 2000 --out "$WORK/corpus" --seed 11 > /dev/null
/usr/bin/time -v "$DFTG" run --corpus "$WORK/corpus" --out "$WORK/out" --quiet 2> "$WORK/time.txt" | sed -n 2,3p
grep -E "Maximum resident|Elapsed" "$WORK/time.txt"
cargo bench -q --locked -p dftg-core --bench diagnose
cargo bench -q --locked -p dftg-pipeline --bench pipeline
