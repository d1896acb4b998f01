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
