#!/usr/bin/env bash
# Installs what Veil needs, only what is missing; safe to run again.
#   scripts/setup.sh          demo, tests and the load benchmark
#   scripts/setup.sh bench    the same (kept for `make bench` and older instructions)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*"; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Tools the scripts use.
apt_install curl ca-certificates python3-venv openssl
# The relay's session store tests run a real redis-server (started by the tests themselves).
apt_install redis-server
# The relay's browser tests: Debian's Chromium (driven by npm playwright-core), Node.js + npm.
apt_install chromium
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
# The aws-cloudhsm (PKCS#11) provider's tests: SoftHSM2 and its softhsm2-util.
apt_install softhsm2
# libfuzzer-sys compiles libFuzzer (C++) for the fuzz targets.
apt_install g++
# The load benchmark's generator for closed loops (bench/run.py); the tests run the harness
# briefly (tests/tests/bench_harness.rs), so it is part of the normal setup.
apt_install wrk

# Rust: the toolchain and wasm target pinned in rust-toolchain.toml.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  step "adding Rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

# Fuzzing (make fuzz, and a short run in make test): nightly Rust and a pinned cargo-fuzz.
if ! cargo +nightly --version >/dev/null 2>&1; then
  step "adding the nightly Rust toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz 0.13.2"; then
  step "installing cargo-fuzz 0.13.2"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

# Python virtualenv with the pinned Envoy binary.
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  python3 -m venv .venv
fi
# Reinstall whenever requirements.txt changed since the last install.
if [ ! -f .venv/.requirements-installed ] || [ requirements.txt -nt .venv/.requirements-installed ]; then
  step "installing Python requirements into .venv (requirements.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  touch .venv/.requirements-installed
fi

# The relay's browser client (client/browser): its npm packages (package-lock.json), again
# whenever the lock changed. The bundle dist/veil-relay.js is committed (the filter embeds it,
# so cargo builds without node); it is built here only if missing, and `make test` checks
# that the committed one is a fresh build of src/.
if [ ! -f client/browser/node_modules/.package-lock.json ] || \
   [ client/browser/package-lock.json -nt client/browser/node_modules/.package-lock.json ]; then
  step "installing the browser client's npm packages (client/browser/package-lock.json)"
  (cd client/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -f client/browser/dist/veil-relay.js ] || [ ! -f client/browser/dist/veil-relay.integrity ]; then
  step "building the browser client bundle (client/browser/dist)"
  (cd client/browser && node build.mjs)
fi
