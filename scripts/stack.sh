#!/usr/bin/env bash
# Runs Veil's demo stack natively: keyservice + demo upstream + Envoy with the Veil filter.
#   scripts/stack.sh up       build what is missing, start in the background, return when ready
#   scripts/stack.sh down     stop it
#   scripts/stack.sh status   show what runs
# Addresses (each overridable by environment):
#   VEIL_LISTEN=127.0.0.1:10000  VEIL_ADMIN=127.0.0.1:9901
#   VEIL_KEYSERVICE=127.0.0.1:9911  VEIL_UPSTREAM=127.0.0.1:18080
# VEIL_FILTER=wasm (default) or native picks the shell Envoy loads Veil with (the proxy-wasm
# filter, or libveil.so as a dynamic module); the same filter JSON configures both.
# State and logs live in .run/ (VEIL_RUN_DIR). The local keyring is created on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

VEIL_LISTEN=${VEIL_LISTEN:-127.0.0.1:10000}
VEIL_ADMIN=${VEIL_ADMIN:-127.0.0.1:9901}
VEIL_KEYSERVICE=${VEIL_KEYSERVICE:-127.0.0.1:9911}
VEIL_UPSTREAM=${VEIL_UPSTREAM:-127.0.0.1:18080}
RUN=${VEIL_RUN_DIR:-$ROOT/.run}
PROFILE=${VEIL_PROFILE:-debug}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SHELL_KIND=${VEIL_FILTER:-wasm}
case "$SHELL_KIND" in wasm | native) ;; *) printf 'error: VEIL_FILTER=%s: wasm or native\n' "$SHELL_KIND" >&2; exit 1 ;; esac

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pid_alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

wait_http() { # url seconds what
  local url=$1 secs=$2 what=$3 i=0
  while [ $i -lt $((secs * 10)) ]; do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1; i=$((i + 1))
  done
  die "$what did not become ready within ${secs}s (see $RUN/$what.log)"
}

build() {
  local cargo_flags=()
  [ "$PROFILE" = release ] && cargo_flags+=(--release)
  if [ "$SHELL_KIND" = native ]; then
    step "building the filter (native dynamic module libveil.so, profile native)"
    cargo build -q -p veil-native --profile native
  else
    step "building the filter (wasm32-wasip1, release)"
    cargo build -q -p veil-filter --target wasm32-wasip1 --release
  fi
  step "building keyservice, demo upstream and the veil-relay CLI ($PROFILE)"
  cargo build -q "${cargo_flags[@]}" -p veil-keyservice -p veil-e2e -p veil-relay --bins
}

start() { # name, then command...
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

up() {
  mkdir -p "$RUN"
  chmod 700 "$RUN"
  if pid_alive envoy && pid_alive keyservice && pid_alive upstream; then
    step "stack already running (scripts/stack.sh down to stop)"
    return 0
  fi
  down quiet
  build
  local bin="$TARGET/$PROFILE"
  export VEIL_KEYRING="$RUN/keyring.json"
  export VEIL_LOCAL_KEK_FILE="$RUN/local-kek.key"
  export KMS_PROVIDER=local
  export VEIL_KEYSERVICE_TOKEN_FILE="$RUN/keyservice.token"
  if [ ! -f "$VEIL_KEYSERVICE_TOKEN_FILE" ]; then
    step "first run: creating the filter's bearer token ($VEIL_KEYSERVICE_TOKEN_FILE)"
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$VEIL_KEYSERVICE_TOKEN_FILE")
  fi
  # The relay's CLIENT_ID_SECRET (HMAC key of client ids, docs/relay.md).
  local relay_secret_file="$RUN/relay-client-id.secret"
  if [ ! -f "$relay_secret_file" ]; then
    step "first run: creating the relay's client-id secret ($relay_secret_file)"
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$relay_secret_file")
  fi
  if [ ! -f "$VEIL_KEYRING" ]; then
    step "first run: creating the local development keyring ($VEIL_KEYRING)"
    "$bin/veil-keyservice" keyring init
  fi

  step "starting keyservice on $VEIL_KEYSERVICE"
  VEIL_KEYSERVICE_LISTEN=$VEIL_KEYSERVICE start keyservice "$bin/veil-keyservice" serve
  wait_http "http://$VEIL_KEYSERVICE/readyz" 20 keyservice

  step "starting demo upstream on $VEIL_UPSTREAM"
  start upstream "$bin/veil-demo-upstream" --listen "$VEIL_UPSTREAM"
  wait_http "http://$VEIL_UPSTREAM/healthz" 20 upstream

  local module="$RUN/modules/libveil.so"
  if [ "$SHELL_KIND" = native ]; then
    # Install the module the safe way: a new file renamed over the old one (never overwrite
    # a .so an Envoy may still have mapped).
    mkdir -p "$RUN/modules"
    cp "$TARGET/native/libveil.so" "$RUN/modules/.libveil.so.new"
    mv -f "$RUN/modules/.libveil.so.new" "$module"
  fi

  step "starting Envoy on $VEIL_LISTEN (admin $VEIL_ADMIN), Veil as the $SHELL_KIND shell"
  VEIL_LISTEN_ADDR=${VEIL_LISTEN%:*} VEIL_LISTEN_PORT=${VEIL_LISTEN##*:} \
  VEIL_ADMIN_ADDR=${VEIL_ADMIN%:*} VEIL_ADMIN_PORT=${VEIL_ADMIN##*:} \
  VEIL_UPSTREAM_ADDR=${VEIL_UPSTREAM%:*} VEIL_UPSTREAM_PORT=${VEIL_UPSTREAM##*:} \
  VEIL_KEYSERVICE_ADDR=${VEIL_KEYSERVICE%:*} VEIL_KEYSERVICE_PORT=${VEIL_KEYSERVICE##*:} \
  VEIL_FILTER=$SHELL_KIND VEIL_NATIVE_MODULE="$module" \
  VEIL_WASM="$TARGET/wasm32-wasip1/release/veil_filter.wasm" \
  VEIL_FILTER_CONFIG_FILE=${VEIL_FILTER_CONFIG_FILE:-envoy/veil-demo.filter.json} \
    python3 scripts/render-envoy.py envoy/veil-demo.yaml "$RUN/envoy.yaml"
  VEIL_KEYSERVICE_TOKEN=$(cat "$VEIL_KEYSERVICE_TOKEN_FILE") \
  VEIL_RELAY_CLIENT_ID_SECRET=$(cat "$relay_secret_file") \
    start envoy .venv/bin/envoy -c "$RUN/envoy.yaml" --concurrency "${VEIL_ENVOY_CONCURRENCY:-1}" \
      --log-level "${VEIL_ENVOY_LOG_LEVEL:-info}" --disable-hot-restart
  wait_http "http://$VEIL_ADMIN/ready" 30 envoy
  # Ready means the filter holds the current data key.
  local i=0
  until curl -fsS "http://$VEIL_ADMIN/stats?filter=veil.keys.fetch_ok" 2>/dev/null | grep -Eq ': [1-9]'; do
    i=$((i + 1)); [ $i -lt 100 ] || die "the filter fetched no data key within 10s (see $RUN/envoy.log)"
    sleep 0.1
  done
  step "ready: send collector traffic to http://$VEIL_LISTEN/collector/v1/events"
  step "relay: $TARGET/$PROFILE/veil-relay --url http://$VEIL_LISTEN/veil GET /app/echo (docs/relay.md)"
}

down() {
  local quiet=${1:-}
  for name in envoy upstream keyservice; do
    if pid_alive "$name"; then
      [ -n "$quiet" ] || step "stopping $name"
      kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true
      for _ in $(seq 50); do pid_alive "$name" || break; sleep 0.1; done
      pid_alive "$name" && kill -9 "$(cat "$RUN/$name.pid")" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
  done
}

status() {
  for name in keyservice upstream envoy; do
    if pid_alive "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
