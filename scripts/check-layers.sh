#!/usr/bin/env bash
# Print the import graph between the top-level modules of src/ and check
# that the layers run one way (no cycle, no upward import, and no cycle
# between the files of one top-level module). It is the
# `layers_run_one_way` test of tests/layers.rs, which `cargo test` (and so
# CI) runs anyway; this only shows its output. Exit status: the test's.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --quiet --test layers -- --nocapture --exact layers_run_one_way
