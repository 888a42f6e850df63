#!/usr/bin/env bash
# Run-throughput benchmark: N runs of a 3-node workflow of cheap nodes created through the API; reports
# end-to-end runs/s, enqueue-to-started p50/p99 and per-node overhead, first with `serve --role=all`
# (one process), then with one api process and 2 worker processes.
#
#   bench/runs.sh                  # RUNS=3000 CONCURRENCY=32
#   RUNS=10000 bench/runs.sh
#   VESPID_BIN=/tmp/vespid-old bench/runs.sh   # measure a prebuilt binary
# Loopback only; every phase is bounded (the driver gives up after 300 s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT="${BENCH_PORT:-3902}"
export BENCH_BASE="http://127.0.0.1:${PORT}"
set -a; eval "$(bash scripts/deps.sh)"; set +a
export BENCH_OWNER_DB="$DATABASE_MIGRATE_URL"

# VESPID_BIN=<prebuilt binary> measures that build instead of this tree's (to compare builds); the driver
# only speaks HTTP, so an already built one is reused then.
BIN="${VESPID_BIN:-}"
if [[ -z "$BIN" ]]; then
    echo "==> building release binaries" >&2
    cargo build --release --locked --quiet
    BIN="${CARGO_TARGET_DIR:-target}/release/vespid"
fi
DRIVER=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/runs-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
if [[ -z "${VESPID_BIN:-}" || -z "$DRIVER" ]]; then
    cargo bench --locked --no-run --bench runs --quiet 2>/dev/null
    DRIVER=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/runs-* | grep -v '\.d$' | head -1)
fi

export API_PORT="$PORT" API_HOST=127.0.0.1 API_LOG_LEVEL=warn WORKFLOW_QUEUE_CONCURRENCY="${WORKER_CONCURRENCY:-64}"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_up() { for _ in $(seq 1 100); do curl -fs "$BENCH_BASE/healthz" >/dev/null 2>&1 && return; sleep 0.1; done; echo "server did not start" >&2; exit 1; }

echo "== 1 process: serve --role=all"
"$BIN" serve --role=all >/tmp/vespid-bench-runs.log 2>&1 & PIDS+=($!)
wait_up
"$DRIVER"
cleanup; PIDS=()

echo "== 3 processes: serve --role=api + 2 x serve --role=worker"
"$BIN" serve --role=api >/tmp/vespid-bench-api.log 2>&1 & PIDS+=($!)
wait_up
"$BIN" serve --role=worker --no-migrate >/tmp/vespid-bench-w1.log 2>&1 & PIDS+=($!)
"$BIN" serve --role=worker --no-migrate >/tmp/vespid-bench-w2.log 2>&1 & PIDS+=($!)
sleep 1
"$DRIVER"
