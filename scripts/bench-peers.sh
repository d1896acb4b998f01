#!/usr/bin/env bash
# dftg beside its peers (../shared/peers: the same diagnose job written with Celery and with Ray
# Data) in one run, on one corpus of N JPEGs in s3s-fs and one stub model with LATENCY_MS.
# usage: scripts/bench-peers.sh [N] [LATENCY_MS]
# Installs what it needs on first use: the peers' Python venv (.cache/peer-venv) and the s3s-fs
# binary (.cache/tools/bin). Peers keep 2 x 32 model requests in flight; dftg's two inference
# workers are given the same (DFTG_WORKER_IN_FLIGHT=32 each) unless set otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
N="${1:-5000}"; LAT="${2:-0}"
data="${DFTG_SHARED_DATA:-$root/../shared/data}"
peers="${DFTG_PEERS:-$(cd "$data/.." && pwd)/peers}"
[[ -x "$peers/run_peers.sh" ]] || { echo "no peers at $peers (set DFTG_PEERS)"; exit 1; }
venv="${PEER_VENV:-$root/.cache/peer-venv}"
if [[ ! -x "$venv/bin/celery" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'ray[data]' celery boto3 requests aiohttp pillow
fi
s3s="${S3S:-$(command -v s3s-fs || true)}"
if [[ -z "$s3s" ]]; then
  s3s="$root/.cache/tools/bin/s3s-fs"
  [[ -x "$s3s" ]] || cargo install s3s-fs@0.14.1 --features binary --locked --root "$root/.cache/tools" -q
fi
cargo build --release --locked --bin dftg -q
export DFTG_WORKER_IN_FLIGHT="${DFTG_WORKER_IN_FLIGHT:-32}"
PEER_VENV="$venv" S3S="$s3s" "$peers/run_peers.sh" "$N" "$LAT" "$root"

# run_peers.sh times dftg's whole job (planning, diagnosis, profile, generation, report); the
# peers do diagnosis only. Same setup once more for dftg's diagnose-stage rate, from the
# coordinator's job status.
D="$root/target/release/dftg"; tmp=$(mktemp -d); pids=(); vhost="dftg-peers-$$"
. scripts/lib.sh
cleanup() { stop_all "$vhost" "$tmp" "${pids[@]}"; }
trap cleanup EXIT
mkdir -p "$tmp/s3/dftg"; "$venv/bin/python" "$peers/make_corpus.py" "$N" "$tmp/s3/dftg/corpus" >/dev/null
p3=$(free_port); pm=$(free_port); pc=$(free_port)
"$s3s" --host 127.0.0.1 --port "$p3" --access-key AK --secret-key SK "$tmp/s3" >/dev/null 2>&1 & pids+=($!)
"$venv/bin/python" "$peers/stub_model.py" --port "$pm" --latency-ms "$LAT" >/dev/null 2>&1 & pids+=($!)
new_vhost "$vhost"
export DFTG_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$vhost" DFTG_STORE_URL=s3://dftg/state
export DFTG_ALLOW_STORES="s3://dftg/corpus,s3://dftg/dftg-out" DFTG_ALLOW_ENDPOINTS="http://127.0.0.1:$pm/v1"
export AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SK AWS_REGION=us-east-1 AWS_ENDPOINT="http://127.0.0.1:$p3" AWS_ALLOW_HTTP=true
"$D" coordinator --listen "127.0.0.1:$pc" >/dev/null 2>&1 & pids+=($!)
"$D" worker --role inference >/dev/null 2>&1 & pids+=($!)
"$D" worker --role inference >/dev/null 2>&1 & pids+=($!)
"$D" worker --role generator >/dev/null 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$pc/readyz"
out=$("$D" submit --coordinator "http://127.0.0.1:$pc" --corpus s3://dftg/corpus --out s3://dftg/dftg-out --endpoint "http://127.0.0.1:$pm/v1" --model-name stub --wait </dev/null 2>&1)
job=$(printf '%s\n' "$out" | head -n1)
curl -sS "http://127.0.0.1:$pc/v1/jobs/$job" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(json.dumps({"peer": "dftg", "stage": "diagnose", "images": s["diagnose"]["items"], "images_per_s": round(s["diagnose"]["rate"], 1),
                  "in_flight": 2 * int(sys.argv[1]), "phase": s["phase"]}))' "$DFTG_WORKER_IN_FLIGHT"
