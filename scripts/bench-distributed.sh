#!/usr/bin/env bash
# Distributed throughput: images/s of the diagnose stage with 1, 2 and 4 inference workers
# (separate processes, RabbitMQ vhost of its own, file store) against a simulator, next to
# `dftg run` on the same corpus. Usage: scripts/bench-distributed.sh [IMAGES] [LATENCY_MS]
# Workers share 64 requests in flight in total (bound 64/latency), or, with PER_WORKER_IN_FLIGHT=K,
# hold K each (bound workers x K / latency).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"; LAT="${2:-0}"
cargo build --release --locked --bin dftg -q
DFTG=$(pwd)/target/release/dftg
WORK=$(mktemp -d); PIDS=()
VHOST="dftg-bench-$$"
. scripts/lib.sh
cleanup() { stop_all "$VHOST" "$WORK" "${PIDS[@]}"; }
trap cleanup EXIT
"$DFTG" corpus synth --images "$N" --out "$WORK/corpus" --seed 11 >/dev/null
SIM=$(free_port)
"$DFTG" sim --listen "127.0.0.1:$SIM" --corpus "$WORK/corpus" --latency-ms "$LAT" >/dev/null & PIDS+=($!)
wait_http "http://127.0.0.1:$SIM/healthz"
s=$(date +%s.%N)
"$DFTG" run --corpus "$WORK/corpus" --endpoint "http://127.0.0.1:$SIM/v1" --model-name sim --out "$WORK/local" --quiet | sed -n 3p
e=$(date +%s.%N)
echo "dftg run (embedded, whole job): $(echo "$N / ($e - $s)" | bc -l | xargs printf '%.0f') images/s end to end"
new_vhost "$VHOST"
export DFTG_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VHOST"
export DFTG_ALLOW_STORES="file://$WORK/corpus" DFTG_ALLOW_ENDPOINTS="http://127.0.0.1:$SIM/v1"
for W in 1 2 4; do
  export DFTG_STORE_URL="file://$WORK/store-$W"
  C=$(free_port)
  "$DFTG" coordinator --listen "127.0.0.1:$C" >/dev/null & CPID=$!
  WP=()
  INF=${PER_WORKER_IN_FLIGHT:-$((64 / W))}
  for _ in $(seq 1 "$W"); do "$DFTG" worker --role inference --prefetch 2 --in-flight "$INF" 2>/dev/null & WP+=($!); done
  "$DFTG" worker --role generator 2>/dev/null & WP+=($!)
  wait_http "http://127.0.0.1:$C/healthz"
  cat > "$WORK/job.toml" <<TOML
shard_size = 100
[corpus]
path = "file://$WORK/corpus"
[model]
kind = "openai"
endpoint = "http://127.0.0.1:$SIM/v1"
name = "sim"
TOML
  OUT=$("$DFTG" submit --job "$WORK/job.toml" --coordinator "http://127.0.0.1:$C" --wait 2>/dev/null)
  JOB=$(printf '%s\n' "$OUT" | head -n1)
  RATE=$(curl -fsS "http://127.0.0.1:$C/v1/jobs/$JOB" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(round(s["diagnose"]["rate"]))')
  BOUND=$(( W * INF * 1000 / (LAT > 0 ? LAT : 1) ))
  echo "distributed, $W inference worker(s), $((W * INF)) requests in flight in total: diagnose stage $RATE images/s$([ "$LAT" -gt 0 ] && echo " ($(( RATE * 100 / BOUND )) % of the bound $BOUND/s)")"
  kill "$CPID" "${WP[@]}" 2>/dev/null || true; wait "$CPID" "${WP[@]}" 2>/dev/null || true
done
