#!/usr/bin/env bash
# Everything of kaas that needs an NVIDIA GPU, in one run of well under ten minutes, so
# that a GPU, whenever one is lent, is used once: device discovery, load and launch of
# every example with outputs equal to its WebAssembly build, const sharing, eviction and
# zeroing of device memory, a trapping kernel, a kernel past its time limit, the real
# NVRTC + ptxas compiles, and the §11 benchmarks (warm invocation overhead over a raw
# cudarc launch measured in the same run; cold start with a 100 MB const).
#
# Prints one line per check (PASS/FAIL) and a final "N passed, N failed"; exits non-zero
# if anything failed. The GPU tests are #[ignore]d in plain `cargo test` (it prints
# "needs a GPU") and fail without KAAS_TEST_CUDA=1, so they never pass silently.
#
# Needs: the NVIDIA driver (libcuda), the Rust toolchain with the crates fetched (run
# `cargo fetch` first on a machine without network), and NVRTC (libnvrtc.so.12) for CUDA C:
# from the CUDA toolkit, or from PyPI (`.ci/install-tools` links it into
# ~/.cache/kaas/tools/lib, which this script puts on LD_LIBRARY_PATH).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
export KAAS_TEST_CUDA=1
export CARGO_TERM_COLOR=never
tools=${KAAS_TOOLS:-$HOME/.cache/kaas/tools}
if [ -d "$tools/lib" ]; then
  export LD_LIBRARY_PATH="$tools/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -d "$tools/bin" ]; then
  export PATH="$tools/bin:$PATH"
fi

pass=0
fail=0
record() { # name ok|FAILED [detail]
  if [ "$2" = ok ]; then
    pass=$((pass + 1))
    printf 'PASS  %s%s\n' "$1" "${3:+  — $3}"
  else
    fail=$((fail + 1))
    printf 'FAIL  %s%s\n' "$1" "${3:+  — $3}"
  fi
}

if gpus=$(nvidia-smi -L 2>&1); then
  record "nvidia-smi" ok "$(echo "$gpus" | head -n1)"
else
  record "nvidia-smi" FAILED "not found or no GPU; trying the driver anyway"
fi

logs=$(mktemp -d)
echo "logs in $logs" >&2

# The tests: every #[ignore]d GPU test of the executor, and the real NVRTC + ptxas
# compiles (required here: KAAS_REQUIRE_NVRTC).
KAAS_REQUIRE_NVRTC=1 timeout 360 cargo test --release --no-fail-fast -p kaas-executor --test cuda --test nvrtc \
  -- --include-ignored --show-output --test-threads 1 >"$logs/tests.log" 2>&1
status=$?
results=$(grep -E '^test .* \.\.\. (ok|FAILED)$' "$logs/tests.log" | sed -E 's/^test (.*) \.\.\. (ok|FAILED)$/\1 \2/')
if [ -z "$results" ]; then
  record "cargo test (cuda, nvrtc)" FAILED "exit $status before any test ran: $(tail -n 3 "$logs/tests.log" | tr '\n' ' ')"
else
  while read -r name result; do
    detail=""
    if [ "$result" != ok ]; then
      detail=$(grep -A3 "'$name'.*panicked" "$logs/tests.log" | sed -n 2p | cut -c1-200)
    fi
    record "$name" "$result" "$detail"
  done <<<"$results"
fi

# The §11 GPU benchmarks: each prints a PASS or FAIL line against its target.
# (the release profile, as the tests above built it: the bench profile's LTO would
# rebuild everything.)
timeout 180 cargo bench --profile release -p kaas-executor --bench cuda >"$logs/bench.log" 2>&1
status=$?
lines=$(grep -E ' — (PASS|FAIL) ' "$logs/bench.log")
if [ -z "$lines" ]; then
  why=$(grep -m1 -E '^Error' "$logs/bench.log" || tail -n 3 "$logs/bench.log" | tr '\n' ' ')
  record "bench cuda" FAILED "exit $status: $why"
else
  while read -r line; do
    case "$line" in
      *"— PASS "*) record "bench: ${line%% — *}" ok ;;
      *) record "bench: ${line%% — *}" FAILED "${line##* — }" ;;
    esac
  done <<<"$lines"
fi

echo "$pass passed, $fail failed (in $(($(date +%s) - start)) s)"
[ "$fail" -eq 0 ]
