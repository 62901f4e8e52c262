#!/usr/bin/env bash
# Run cargo-fuzz targets for a while each (nightly Rust + cargo-fuzz:
# `rustup toolchain install nightly && cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh [MINUTES] [TARGET...]
#
# MINUTES (default 5) per target; TARGETs default to every target in
# fuzz/Cargo.toml. Each run starts from fuzz/corpus/TARGET and adds what it
# finds there; crashes, hangs (>10 s) and out-of-memory inputs (>2 GiB RSS,
# or a single allocation over 512 MiB) land in fuzz/artifacts/TARGET/.
# Keep a found input as a regression case: fix the bug, copy the input to
# fuzz/regressions/TARGET/<what-it-was>, and `cargo test --test
# fuzz_replay` replays it on stable Rust from then on. Shrink a grown
# corpus with `cargo +nightly fuzz cmin TARGET` before committing it.
# FUZZ_JOBS=N runs N targets at once (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-5}"
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^image-creator-fuzz$')
fi
jobs="${FUZZ_JOBS:-1}"
seconds=$((minutes * 60))
run() {
  local t="$1"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local log="fuzz/artifacts/$t/fuzz.log"
  local t0=$SECONDS
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=512 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || true
  local runs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "== $t: $((SECONDS - t0)) s, ${runs:-?} runs, corpus $(ls "fuzz/corpus/$t" | wc -l) files; log $log"
  grep -E '^(==[0-9]+==|SUMMARY|thread .* panicked)' "$log" | head -n 5 || true
}
cargo +nightly fuzz build
running=0
for t in "${targets[@]}"; do
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait
ls -R fuzz/artifacts | grep -E '^(crash|timeout|oom|leak|slow)-' && echo "findings above" || echo "no findings"
