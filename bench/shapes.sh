#!/usr/bin/env bash
# Workflow-shape benchmark: what large or hostile workflows cost to create (validate) and to run, against
# `vespid serve --role=all`. Shapes: a v3 ladder of 1,000 rungs, a complete graph of 100 joins, a
# 5,000-node chain; runs of 100- and 5,000-node chains of HTTP nodes calling a local target.
#
#   bench/shapes.sh
# Loopback only; every phase is bounded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT="${BENCH_PORT:-3903}"
export BENCH_BASE="http://127.0.0.1:${PORT}"
set -a; eval "$(bash scripts/deps.sh)"; set +a

echo "==> building release binaries" >&2
cargo build --release --locked --quiet
cargo bench --locked --no-run --bench shapes --quiet 2>/dev/null
DRIVER=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/shapes-* | grep -v '\.d$' | head -1)
BIN="${CARGO_TARGET_DIR:-target}/release/vespid"

export API_PORT="$PORT" API_HOST=127.0.0.1 API_LOG_LEVEL=warn HTTP_NODE_ALLOW_HOSTS=127.0.0.1
"$BIN" serve --role=all >/tmp/vespid-bench-shapes.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fs "$BENCH_BASE/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
timeout 900 "$DRIVER"
