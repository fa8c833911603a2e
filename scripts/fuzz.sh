#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 10), starting
# from fuzz/seeds/<target>/ (named inputs from fixtures/) and fuzz/corpus/<target>/ (the
# minimized corpus of earlier long runs); new inputs go to a scratch directory, so a run
# does not grow the repository.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# A crash stops the run: the input is in fuzz/artifacts/<target>/ (reproduce with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`).
# FUZZ_KEEP=1 merges what was found (minimized) back into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
shift || true
step() { printf '==> %s\n' "$*"; }

step "building the fuzz targets (nightly, libFuzzer)"
start=$(date +%s)
cargo +nightly fuzz build -O >/dev/null 2>&1 || cargo +nightly fuzz build -O
step "built in $(( $(date +%s) - start )) s"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "fuzz/corpus/$t" "fuzz/seeds/$t"
  log="$scratch/$t.log"
  if ! cargo +nightly fuzz run -O "$t" "$scratch/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -max_len=65536 \
      >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $t FAILED (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  printf '    %-16s %8s execs in %ss, %s, 0 crashes\n' "$t" "$runs" "$secs" "${cov:-cov: ?}"
  if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    mkdir -p "$scratch/min-$t"
    cargo +nightly fuzz run -O "$t" "$scratch/min-$t" "fuzz/corpus/$t" "$scratch/$t" -- \
      -merge=1 -max_len=4096 >/dev/null 2>&1
    rm -rf "fuzz/corpus/$t"; mv "$scratch/min-$t" "fuzz/corpus/$t"
  fi
done
