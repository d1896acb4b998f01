#!/usr/bin/env bash
# Coordinator peak memory while planning a large corpus: a real `dftg coordinator` process (file
# store, RabbitMQ vhost of its own) plans a synthetic JSONL manifest of IMAGES lines split into
# parts under manifest/ (generated here, deleted afterwards) and publishes its shard tasks; its
# VmHWM is read when the job reaches the diagnose phase (no workers run; the job is cancelled).
# With FORMAT=coco the corpus is one COCO instances file instead (three annotations an image,
# with segmentation polygons), which planning streams and splits into parts on scratch disk.
# usage: scripts/bench-plan-memory.sh [IMAGES] [SHARD_SIZE] [jsonl|coco]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000000}"; SHARD="${2:-1000}"; FORMAT="${3:-jsonl}"
cargo build --release --locked --bin dftg -q
DFTG=$(pwd)/target/release/dftg
WORK=$(mktemp -d); PIDS=(); VHOST="dftg-planmem-$$"
. scripts/lib.sh
cleanup() { stop_all "$VHOST" "$WORK" "${PIDS[@]}"; }
trap cleanup EXIT
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
python3 - "$N" "$WORK/corpus/manifest" "$FORMAT" <<'PY'
import os, sys
n, out, fmt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if fmt == "coco":
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(os.path.join(os.path.dirname(out), "annotations.json"), "w") as f:
        f.write('{"info": {"description": "synthetic"}, "images": [')
        for start in range(0, n, 100_000):
            f.write(",".join(f'{{"id": {i}, "file_name": "img-{i:09d}.jpg", "width": 640, "height": 480}}' for i in range(start, min(n, start + 100_000))))
            if start + 100_000 < n:
                f.write(",")
        f.write('], "annotations": [')
        m = 3 * n
        for start in range(0, m, 300_000):
            f.write(",".join(f'{{"id": {k}, "image_id": {(k * 7919) % n}, "category_id": {1 + k % 80}, "iscrowd": 0, "area": 400.0, '
                             f'"bbox": [10.0, 20.0, 20.0, 20.0], "segmentation": [[10.0, 20.0, 30.0, 20.0, 30.0, 40.0, 10.0, 40.0]]}}'
                             for k in range(start, min(m, start + 300_000))))
            if start + 300_000 < m:
                f.write(",")
        f.write('], "categories": [' + ",".join(f'{{"id": {c}, "name": "category-{c}"}}' for c in range(1, 81)) + "]}")
    sys.exit(0)
os.makedirs(out)
names = ["person", "dog", "car", "chair", "cup", "bicycle", "traffic light", "dining table"]
per = 100_000
for p in range(0, n, per):
    with open(f"{out}/part-{p // per:05d}.jsonl", "w") as f:
        f.writelines(f'{{"image":"img-{i:09d}","file":"images/img-{i:09d}.jpg","objects":[{{"name":"{names[i % 8]}","count":{1 + i % 3}}},"{names[i // 8 % 8]}"]}}\n'
                     for i in range(p, min(n, p + per)))
PY
new_vhost "$VHOST"
C=$(free_port)
DFTG_ALLOW_STORES="file://$WORK/corpus" DFTG_ALLOW_ENDPOINTS="http://127.0.0.1:9/v1" DFTG_SCRATCH_DIR="$WORK/scratch" DFTG_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VHOST" DFTG_STORE_URL="file://$WORK/store" "$DFTG" coordinator --listen "127.0.0.1:$C" >/dev/null 2>&1 & CPID=$!; PIDS+=($CPID)
wait_http "http://127.0.0.1:$C/readyz"
idle=$(hwm "$CPID")
cat > "$WORK/job.toml" <<TOML
shard_size = $SHARD
[corpus]
path = "file://$WORK/corpus"
$([[ $FORMAT == coco ]] && echo 'annotations = "annotations.json"' || echo 'annotations = "manifest/"')
[model]
kind = "openai"
endpoint = "http://127.0.0.1:9/v1"
name = "none"
TOML
s=$(date +%s.%N)
JOB=$("$DFTG" submit --job "$WORK/job.toml" --coordinator "http://127.0.0.1:$C" 2>/dev/null | head -n1)
while :; do
  phase=$(curl -fsS "http://127.0.0.1:$C/v1/jobs/$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["phase"])')
  [[ $phase == planning ]] || break
  [[ -n ${TRACE_RSS:-} ]] && awk '/VmRSS/ {printf "rss %.0f MiB\n", $2/1024}' "/proc/$CPID/status"; sleep 0.5
done
e=$(date +%s.%N)
total=$(curl -fsS "http://127.0.0.1:$C/v1/jobs/$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["diagnose"]["shards_total"])')
# every shard task published (no worker consumes them): the coordinator's work for the plan is done
for _ in $(seq 1 600); do
  queued=$(rabbitmqctl list_queues -p "$VHOST" name messages 2>/dev/null | awk '$1 == "dftg.diagnose" {print $2}')
  [[ "${queued:-0}" -ge "$total" ]] && break
  sleep 1
done
peak=$(hwm "$CPID")
curl -fsS -X POST "http://127.0.0.1:$C/v1/jobs/$JOB/cancel" >/dev/null || true
shards=$(ls "$WORK/store/$JOB/plan" | wc -l)
size=$(du -sm "$WORK/corpus" | cut -f1)
echo "{\"bench\": \"coordinator_plan_memory\", \"format\": \"$FORMAT\", \"corpus_mib\": $size, \"images\": $N, \"shard_size\": $SHARD, \"plan_shards\": $shards, \"tasks_queued\": ${queued:-0}, \"phase_after_plan\": \"$phase\", \"seconds_to_first_phase\": $(printf "%.3f" "$(echo "$e - $s" | bc)"), \"coordinator_peak_rss_mib_idle\": $idle, \"coordinator_peak_rss_mib\": $peak}"
