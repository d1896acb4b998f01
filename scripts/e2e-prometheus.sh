#!/usr/bin/env bash
# End to end with a real Prometheus (Debian's package, extracted): a distributed job on
# loopback (RabbitMQ vhost of its own, file store, simulator, coordinator, two workers) while
# Prometheus scrapes every process; afterwards every metric name used in the dashboard and the
# alert rules must be present in Prometheus, and the job's progress must have reached
# done = total.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="$ROOT/.cache/tools"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
DFTG="${DFTG_BIN:-$ROOT/target/debug/dftg}"
[ -x "$DFTG" ] || cargo build --locked --bin dftg -q

# Prometheus server binary from Debian's package (downloaded, not installed as a service)
PROM="$CACHE/prometheus/prometheus"
if [ ! -x "$PROM" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && (apt-get download prometheus >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download prometheus >/dev/null; }))
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "$CACHE/prometheus" && cp "$tmp/x/usr/bin/prometheus" "$PROM.part" && mv "$PROM.part" "$PROM"
  rm -rf "$tmp"
fi

. scripts/lib.sh
WORK=$(mktemp -d)
VHOST="dftg-e2e-prom-$$"
PIDS=()
cleanup() { stop_all "$VHOST" "$WORK" "${PIDS[@]}"; }
trap cleanup EXIT
new_vhost "$VHOST"
export DFTG_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VHOST"
export DFTG_STORE_URL="file://$WORK/store"

"$DFTG" corpus synth --images 300 --out "$WORK/corpus" --seed 5 >/dev/null
SIM_PORT=$(free_port); COORD_PORT=$(free_port); W1=$(free_port); W2=$(free_port); PROM_PORT=$(free_port)
"$DFTG" sim --listen "127.0.0.1:$SIM_PORT" --corpus "$WORK/corpus" --profile people-everywhere --latency-ms 20 >/dev/null & PIDS+=($!)
# what jobs may touch: the operator's choice, given to the coordinator and the workers
export DFTG_ALLOW_STORES="file://$WORK/corpus" DFTG_ALLOW_ENDPOINTS="http://127.0.0.1:$SIM_PORT/v1"
"$DFTG" coordinator --listen "127.0.0.1:$COORD_PORT" >/dev/null & PIDS+=($!)
"$DFTG" worker --role inference --metrics-listen "127.0.0.1:$W1" 2>/dev/null & PIDS+=($!)
"$DFTG" worker --role generator --metrics-listen "127.0.0.1:$W2" 2>/dev/null & PIDS+=($!)

cat > "$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: dftg
    honor_labels: true   # dftg's own "job" label (the job id) must survive the scrape
    static_configs:
      - targets: ["127.0.0.1:$COORD_PORT", "127.0.0.1:$W1", "127.0.0.1:$W2"]
YML
"$PROM" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 & PIDS+=($!)

wait_http "http://127.0.0.1:$SIM_PORT/healthz"
wait_http "http://127.0.0.1:$COORD_PORT/healthz"
wait_http "http://127.0.0.1:$W1/healthz"
wait_http "http://127.0.0.1:$W2/healthz"
wait_http "http://127.0.0.1:$PROM_PORT/-/ready"

cat > "$WORK/job.toml" <<TOML
shard_size = 30
[corpus]
path = "file://$WORK/corpus"
[model]
kind = "openai"
endpoint = "http://127.0.0.1:$SIM_PORT/v1"
name = "sim"
TOML
OUT=$("$DFTG" submit --job "$WORK/job.toml" --coordinator "http://127.0.0.1:$COORD_PORT" --wait 2>/dev/null)
JOB=$(printf '%s\n' "$OUT" | head -n1)
echo "job $JOB done; letting Prometheus scrape the final values"

python3 - "$PROM_PORT" "$JOB" <<'PY'
import json, re, sys, time, urllib.parse, urllib.request
port, job = sys.argv[1], sys.argv[2]
def q(expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return json.load(urllib.request.urlopen(url))["data"]["result"]
text = open("deploy/grafana/dftg.json").read() + open("deploy/prometheus/alerts.yml").read()
names = sorted(set(re.findall(r"\bdftg_[a-z0-9_]+", text)))
deadline = time.time() + 30
while True:
    # a histogram's base name lives in Prometheus as _bucket/_sum/_count series
    missing = [n for n in names if not q(f'count({{__name__=~"{n}(_bucket|_sum|_count)?"}})')]
    done = q(f'dftg_job_shards{{job="{job}",state="done"}}')
    total = q(f'dftg_job_shards{{job="{job}",state="total"}}')
    progress_ok = bool(done) and len(done) == len(total) == 2 and all(
        d["value"][1] == t["value"][1] and float(t["value"][1]) > 0
        for d in sorted(done, key=lambda r: r["metric"]["stage"]) for t in sorted(total, key=lambda r: r["metric"]["stage"])
        if d["metric"]["stage"] == t["metric"]["stage"])
    if (not missing and progress_ok) or time.time() > deadline:
        break
    time.sleep(1)
print(f"{len(names)} metric names used by the dashboard and alerts; missing in Prometheus: {missing or 'none'}")
print("job progress (shards done/total):", {r["metric"]["stage"]: r["value"][1] for r in done}, "/", {r["metric"]["stage"]: r["value"][1] for r in total})
sys.exit(0 if not missing and progress_ok else 1)
PY
echo "e2e prometheus: ok"
