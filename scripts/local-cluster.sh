#!/usr/bin/env bash
# The distributed shape of dftg on one machine without Docker: the same processes as
# deploy/compose (model simulator, coordinator, inference and generator workers) against a
# local RabbitMQ, with a file:// store instead of S3 (no Prometheus or Grafana: point yours
# at the printed /metrics addresses).
#
#   scripts/local-cluster.sh            start, print how to submit, run until Ctrl-C
#   scripts/local-cluster.sh --smoke    start, submit the example job, wait for it, stop
#
# Environment: DFTG (the binary; default target/release/dftg, built when missing),
# DFTG_LOCAL_DIR (store, logs, token, job; default out/local-cluster), DFTG_AMQP_URL (default:
# a vhost and user of this script's own on the local broker, made with rabbitmqctl),
# DFTG_LOCAL_PORT (first of the ports used; default 18000), DFTG_INFERENCE_WORKERS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
DFTG="${DFTG:-$ROOT/target/release/dftg}"
if [ ! -x "$DFTG" ]; then cargo build --release --locked --bin dftg; fi
DIR="${DFTG_LOCAL_DIR:-$ROOT/out/local-cluster}"
PORT="${DFTG_LOCAL_PORT:-18000}"
WORKERS="${DFTG_INFERENCE_WORKERS:-2}"
mkdir -p "$DIR/store" "$DIR/logs"
DIR=$(cd "$DIR" && pwd)

# RabbitMQ: a vhost of our own, so this stack's queues never mix with another's
if [ -z "${DFTG_AMQP_URL:-}" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  command -v rabbitmqctl >/dev/null || { echo "no rabbitmqctl: install rabbitmq-server or set DFTG_AMQP_URL" >&2; exit 2; }
  [ -s "$DIR/amqp-password" ] || (umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/amqp-password")
  $SUDO rabbitmqctl -q add_vhost dftg-local 2>/dev/null || true
  $SUDO rabbitmqctl -q add_user dftg-local "$(cat "$DIR/amqp-password")" 2>/dev/null \
    || $SUDO rabbitmqctl -q change_password dftg-local "$(cat "$DIR/amqp-password")"
  $SUDO rabbitmqctl -q set_permissions -p dftg-local dftg-local '.*' '.*' '.*'
  DFTG_AMQP_URL="amqp://dftg-local:$(cat "$DIR/amqp-password")@127.0.0.1:5672/dftg-local"
fi
export DFTG_AMQP_URL DFTG_STORE_URL="file://$DIR/store" DFTG_LOG="${DFTG_LOG:-info}"
export DFTG_ALLOW_STORES="file://$ROOT/examples" DFTG_ALLOW_ENDPOINTS="http://127.0.0.1:$PORT/v1"
# jobs may also name a bundled simulator profile (--model sim:NAME): workers run it in process
export DFTG_ALLOW_SIM=true
[ -s "$DIR/token" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/token")

PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT
start() { local name=$1; shift; "$DFTG" "$@" >"$DIR/logs/$name.log" 2>&1 & PIDS+=($!); }
wait_http() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1; see $DIR/logs/" >&2; exit 1
}

start sim sim --listen "127.0.0.1:$PORT" --corpus "$ROOT/examples/corpus" --profile people-everywhere
wait_http "$PORT"
start coordinator coordinator --listen "127.0.0.1:$((PORT + 80))" --token-file "$DIR/token"
wait_http "$((PORT + 80))"
for i in $(seq 1 "$WORKERS"); do
  start "inference-$i" worker --role inference --metrics-listen "127.0.0.1:$((PORT + 90 + i))"
done
start generator worker --role generator --metrics-listen "127.0.0.1:$((PORT + 90))"

cat > "$DIR/job.toml" <<JOB
# the example corpus against the local simulator (written by scripts/local-cluster.sh)
name = "local-example"
shard_size = 25

[corpus]
path = "file://$ROOT/examples/corpus"

[model]
kind = "openai"
endpoint = "http://127.0.0.1:$PORT/v1"
name = "sim-people-everywhere"
JOB

COORD="http://127.0.0.1:$((PORT + 80))"
if [ $SMOKE = 1 ]; then
  export DFTG_TOKEN; DFTG_TOKEN=$(cat "$DIR/token")
  "$DFTG" submit "$DIR/job.toml" --coordinator "$COORD" --wait
  # the same corpus with the simulator inside the workers
  "$DFTG" submit --corpus "file://$ROOT/examples/corpus" --model sim:kitchenware --name local-sim \
    --shard-size 25 --coordinator "$COORD" --wait
  exit $?
fi
cat <<MSG
dftg is running (logs in $DIR/logs/):
  coordinator  $COORD (/metrics, /healthz)   simulator http://127.0.0.1:$PORT/v1
  workers      $WORKERS inference (/metrics on 127.0.0.1:$((PORT + 91))..), 1 generator (127.0.0.1:$((PORT + 90)))
  outputs      $DIR/store/<job-id>/

  export DFTG_TOKEN=\$(cat $DIR/token)
  $DFTG submit $DIR/job.toml --coordinator $COORD --wait
  $DFTG submit --corpus file://$ROOT/examples/corpus --model sim:kitchenware --coordinator $COORD --wait
  $DFTG status --coordinator $COORD

Ctrl-C stops everything.
MSG
wait
