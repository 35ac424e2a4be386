#!/usr/bin/env bash
# Runs Thinklio's whole test suite: every crate's unit and integration tests
# (the store conformance suite, provider replays, the SIGKILL crash test, the
# benchmark smoke test) and the doc tests, README example included.
set -euo pipefail
cd "$(dirname "$0")/.."

# Doc tests first (nextest does not run them), so the run ends on the
# summary of every other test.
cargo test --workspace --doc
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets --no-fail-fast
else
    echo "cargo-nextest not found; running cargo test" >&2
    cargo test --workspace --all-targets --no-fail-fast
fi
