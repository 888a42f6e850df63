#!/usr/bin/env bash
# Remote-execution benchmark: `serve --role=all` plus one real `vespid agent` (host backend) paired with one
# command; reports a one-remote-node run's enqueue-to-succeeded p50/p99 (target p50 <= 20 ms; the
# original polls every 2 s) and remote tasks per second through that agent.
#
#   bench/remote.sh                 # LATENCY_RUNS=200 RUNS=2000 CONCURRENCY=16
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT="${BENCH_PORT:-3903}"
GW_PORT="${BENCH_GATEWAY_PORT:-3904}"
export BENCH_BASE="http://127.0.0.1:${PORT}"
set -a; eval "$(bash scripts/deps.sh)"; set +a
export BENCH_OWNER_DB="$DATABASE_MIGRATE_URL"

echo "==> building release binaries" >&2
cargo build --release --locked --quiet
cargo bench --locked --no-run --bench remote --quiet 2>/dev/null
DRIVER=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/remote-* | grep -v '\.d$' | head -1)
export BENCH_BIN="${CARGO_TARGET_DIR:-target}/release/vespid"

export API_PORT="$PORT" API_HOST=127.0.0.1 API_LOG_LEVEL=warn
export GATEWAY_PORT="$GW_PORT" GATEWAY_HOST=127.0.0.1 GATEWAY_WS_URL="ws://127.0.0.1:${GW_PORT}/ws/executor"
export WORKSPACE_DIR="${TMPDIR:-/tmp}/vespid-bench-workspaces"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_up() { for _ in $(seq 1 100); do curl -fs "$BENCH_BASE/healthz" >/dev/null 2>&1 && return; sleep 0.1; done; echo "server did not start" >&2; exit 1; }

echo "== serve --role=all + 1 vespid agent (host backend)"
"$BENCH_BIN" serve --role=all >/tmp/vespid-bench-remote.log 2>&1 & PIDS+=($!)
wait_up
"$DRIVER"
