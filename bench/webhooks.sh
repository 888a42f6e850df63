#!/usr/bin/env bash
# Webhook intake benchmark: `vespid serve --role=all`, one published workflow with a `trigger.webhook`
# (one cheap node), then wrk POSTs deliveries (JSON body, `X-Vespid-Webhook-Token`) for DURATION from CONNS
# connections: accepted deliveries (202, one run each) per second with p50/p99; then it waits until every
# run started that way has finished and reports the end-to-end runs/s (first created_at to last
# finished_at, read from PostgreSQL).
#
#   bench/webhooks.sh                       # CONNS=32 DURATION=10s
#   VESPID_BIN=/tmp/vespid-old bench/webhooks.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONNS="${CONNS:-32}"
DURATION="${DURATION:-10s}"
PORT="${BENCH_PORT:-3905}"
BASE="http://127.0.0.1:${PORT}"

command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }
set -a; eval "$(bash scripts/deps.sh)"; set +a

BIN="${VESPID_BIN:-}"
if [[ -z "$BIN" ]]; then
    echo "==> building release binary" >&2
    cargo build --release --locked --quiet
    BIN="${CARGO_TARGET_DIR:-target}/release/vespid"
fi

# No per-workflow rate limit: the benchmark measures intake, not the limiter.
export API_PORT="$PORT" API_HOST=127.0.0.1 API_LOG_LEVEL=warn WEBHOOK_RATE_PER_MINUTE=0
export GATEWAY_PORT="${BENCH_GATEWAY_PORT:-3906}"
"$BIN" serve --role=all >/tmp/vespid-bench-webhooks.log 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fs "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

EMAIL="hooks-$(date +%s%N)@example.com"
TOKEN=$(curl -fs -X POST "$BASE/v1/auth/signup" -H 'content-type: application/json' \
    -d "{\"email\":\"$EMAIL\",\"password\":\"Password123\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["session"]["token"])')
ORG=$(curl -fs "$BASE/v1/me" -H "authorization: Bearer $TOKEN" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["defaultOrgId"])')
HOOK_TOKEN="bench-hook-$(date +%s%N)"
WF=$(curl -fs -X POST "$BASE/v1/orgs/$ORG/workflows" -H "authorization: Bearer $TOKEN" -H "x-org-id: $ORG" \
    -H 'content-type: application/json' \
    -d "{\"name\":\"hook\",\"dsl\":{\"version\":\"v2\",\"trigger\":{\"type\":\"trigger.webhook\",\"config\":{\"token\":\"$HOOK_TOKEN\"}},\"nodes\":[{\"id\":\"a\",\"type\":\"condition\"}]}}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["workflow"]["id"])')
curl -fs -X POST "$BASE/v1/orgs/$ORG/workflows/$WF/publish" -H "authorization: Bearer $TOKEN" \
    -H "x-org-id: $ORG" >/dev/null

LUA=$(mktemp --suffix .lua)
cat >"$LUA" <<LUA
wrk.method = "POST"
wrk.body = '{"event":"push","ref":"refs/heads/main"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Vespid-Webhook-Token"] = "$HOOK_TOKEN"
LUA
echo "== webhook intake: $CONNS connections, $DURATION, $(nproc) cores (wrk, server and PostgreSQL share them)"
OUT=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$LUA" "$BASE/v1/hooks/$WF")
rm -f "$LUA"
printf '%s\n' "$OUT" | awk '/Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} /Non-2xx/ {bad=$4}
    END {printf "accepted deliveries: %s /s   p50 %s   p99 %s   non-2xx %s\n", rps, p50, p99, bad ? bad : 0}'

SQL="SELECT set_config('app.current_org_id', '$ORG', false);
SELECT count(*), count(*) FILTER (WHERE status IN ('succeeded','failed')),
       round((extract(epoch FROM max(finished_at) - min(created_at)))::numeric, 2)
FROM workflow_runs WHERE workflow_id = '$WF';"
for _ in $(seq 1 600); do
    read -r TOTAL DONE SECS < <(psql "$DATABASE_MIGRATE_URL" -Atq -F ' ' -c "$SQL" | tail -1)
    [[ "$TOTAL" == "$DONE" ]] && break
    sleep 0.5
done
python3 - "$TOTAL" "$DONE" "$SECS" <<'PY'
import sys
total, done, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3] or 0)
print(f"runs started by webhooks: {total}, finished: {done}, end to end {secs:.2f} s => {total / secs if secs else 0:.0f} runs/s")
PY
