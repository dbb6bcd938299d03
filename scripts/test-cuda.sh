#!/usr/bin/env bash
# Runs every CUDA test of kaas on a machine with an NVIDIA GPU and its driver.
# The tests are #[ignore]d elsewhere (cargo test prints "needs a GPU") and fail
# without KAAS_TEST_CUDA=1, so they never pass silently.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi || echo "nvidia-smi not found; trying the driver anyway" >&2
export KAAS_TEST_CUDA=1
cargo test --release -p kaas-executor --test cuda -- --include-ignored --nocapture --test-threads 1
