#!/usr/bin/env bash
# API benchmark: throughput and latency with wrk against `vespid serve --role=all` on loopback, plus idle RSS.
#
#   bench/api.sh                 # defaults: 64 connections, 1 wrk thread, 15 s per endpoint
#   CONNS=64 DURATION=30s bench/api.sh
#
# Endpoints: GET /v1/meta/capabilities (public), GET /v1/orgs/{org}/settings (bearer + X-Org-Id: the
# org-scoped authenticated path; session, membership and settings come from the in-process caches),
# GET /v1/orgs/{org}/secrets (same auth path plus a tenant transaction in PostgreSQL on every request),
# POST /v1/auth/login (argon2id on purpose: it is CPU-bound by design).
# Everything runs on this machine (wrk shares the cores with the server and PostgreSQL); traffic goes to
# 127.0.0.1 only, and every run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONNS="${CONNS:-64}"
THREADS="${THREADS:-1}"
DURATION="${DURATION:-15s}"
PORT="${BENCH_PORT:-3901}"
BASE="http://127.0.0.1:${PORT}"

command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }
set -a; eval "$(bash scripts/deps.sh)"; set +a

echo "==> building release binary" >&2
cargo build --release --locked --quiet

export API_PORT="$PORT" API_HOST=127.0.0.1 API_LOG_LEVEL=warn
"${CARGO_TARGET_DIR:-target}/release/vespid" serve --role=all >/tmp/vespid-bench.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fs "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
RSS_IDLE_KB=$(ps -o rss= -p "$PID" | tr -d ' ')

EMAIL="bench-$(date +%s%N)@example.com"
SIGNUP=$(curl -fs -X POST "$BASE/v1/auth/signup" -H 'content-type: application/json' \
    -d "{\"email\":\"$EMAIL\",\"password\":\"Password123\"}")
TOKEN=$(printf '%s' "$SIGNUP" | python3 -c 'import json,sys; print(json.load(sys.stdin)["session"]["token"])')
ORG=$(curl -fs "$BASE/v1/me" -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["defaultOrgId"])')

LUA=$(mktemp --suffix .lua)
cat >"$LUA" <<LUA
wrk.method = "POST"
wrk.body = '{"email":"$EMAIL","password":"Password123"}'
wrk.headers["Content-Type"] = "application/json"
LUA

run() { # name, then wrk args
    local name=$1; shift
    local out
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@")
    local rps p50 p99 non2xx
    rps=$(printf '%s\n' "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(printf '%s\n' "$out" | awk '$1=="50%" {print $2}')
    p99=$(printf '%s\n' "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(printf '%s\n' "$out" | awk '/Non-2xx/ {print $4}')
    printf '%-28s %12s req/s   p50 %-9s p99 %-9s non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
}

echo "== vespid api bench: $CONNS connections, $THREADS wrk thread(s), $DURATION each, $(nproc) cores"
run "GET /v1/meta/capabilities" "$BASE/v1/meta/capabilities"
run "GET org settings (authed)" -H "authorization: Bearer $TOKEN" -H "x-org-id: $ORG" "$BASE/v1/orgs/$ORG/settings"
run "GET org secrets (authed, DB)" -H "authorization: Bearer $TOKEN" -H "x-org-id: $ORG" "$BASE/v1/orgs/$ORG/secrets"
run "POST /v1/auth/login" -s "$LUA" "$BASE/v1/auth/login"
RSS_AFTER_KB=$(ps -o rss= -p "$PID" | tr -d ' ')
echo "idle RSS of serve --role=all: $((RSS_IDLE_KB / 1024)) MiB (after load: $((RSS_AFTER_KB / 1024)) MiB)"
rm -f "$LUA"
