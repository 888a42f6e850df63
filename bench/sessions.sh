#!/usr/bin/env bash
# Session-turn benchmark: `serve --role=all` with its OpenAI-compatible endpoint pointed at a fake
# streaming provider served by the driver; one control client over /ws/client sends TURNS messages one at
# a time. Reports first-token-to-client p50/p99 (target p50 < 10 ms) and the brain's own time per turn
# (target p50 < 5 ms).
#
#   bench/sessions.sh                 # TURNS=200 PROVIDER_MS=5
#   VESPID_BIN=/path/to/vespid bench/sessions.sh   # measure a prebuilt server binary
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT="${BENCH_PORT:-3905}"
GW_PORT="${BENCH_GATEWAY_PORT:-3906}"
FAKE="${BENCH_FAKE_LLM:-127.0.0.1:3907}"
export BENCH_BASE="http://127.0.0.1:${PORT}" BENCH_WS="ws://127.0.0.1:${GW_PORT}" BENCH_FAKE_LLM="$FAKE"
set -a; eval "$(bash scripts/deps.sh)"; set +a

echo "==> building release binaries" >&2
if [ -z "${VESPID_BIN:-}" ]; then cargo build --release --locked --quiet; fi
cargo bench --locked --no-run --bench sessions --quiet 2>/dev/null
DRIVER=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/sessions-* | grep -v '\.d$' | head -1)
BIN="${VESPID_BIN:-${CARGO_TARGET_DIR:-target}/release/vespid}"

export API_PORT="$PORT" API_HOST=127.0.0.1 API_LOG_LEVEL=warn
export GATEWAY_PORT="$GW_PORT" GATEWAY_HOST=127.0.0.1 GATEWAY_WS_URL="ws://127.0.0.1:${GW_PORT}/ws/executor"
export INFERENCE_OPENAI_BASE_URL="http://${FAKE}" OPENAI_API_KEY="sk-bench-not-a-real-key"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_up() { for _ in $(seq 1 100); do curl -fs "$BENCH_BASE/healthz" >/dev/null 2>&1 && return; sleep 0.1; done; echo "server did not start" >&2; exit 1; }

echo "== serve --role=all, fake streaming provider at ${FAKE}"
"$BIN" serve --role=all >/tmp/vespid-bench-sessions.log 2>&1 & PIDS+=($!)
wait_up
"$DRIVER"
