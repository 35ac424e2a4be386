#!/usr/bin/env bash
# How long a newcomer waits between cloning Thinklio and the quickstart's
# first reply: builds `cargo run --example quickstart` into an empty target
# directory (the debug profile `cargo run` uses, with this machine's cores),
# then runs it once offline. Prints the minutes, the crates compiled and
# whether the heavy parts the quickstart does not use were left out.
#
#   scripts/quickstart-build.sh [CHECKOUT]    (default: this checkout)
set -euo pipefail
checkout=${1:-$(cd "$(dirname "$0")/.." && pwd)}
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
cd "$checkout"
start=$(date +%s.%N)
CARGO_TARGET_DIR=$target cargo build --example quickstart 2>"$target/build.log"
built=$(date +%s.%N)
reply=$(CARGO_TARGET_DIR=$target cargo run -q --example quickstart -- \
    --db "$target/q.db" --message "what is 17*23?" 2>/dev/null </dev/null || true)
crates=$(grep -c '^ *Compiling ' "$target/build.log" || true)
heavy=$( (grep -oE '^ *Compiling (candle-core|candle-transformers|tokenizers|chromiumoxide|teloxide-core|axum|utoipa|opentelemetry) ' "$target/build.log" || true) | awk '{print $2}' | sort -u | tr '\n' ' ')
printf 'checkout: %s\nbuild: %.1f minutes, %s crates compiled\nheavy parts compiled: %s\nfirst reply: %s\n' \
    "$checkout" "$(echo "($built - $start) / 60" | bc -l)" "$crates" "${heavy:-none}" "$reply"
