#!/usr/bin/env bash
# Run Vespid locally with every role in one process, against local PostgreSQL and Redis.
# Extra arguments go to `vespid serve`, e.g.: scripts/dev.sh --no-migrate
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PGPORT="${PGPORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
export PGPORT REDIS_PORT

echo "==> starting PostgreSQL and Redis (scripts/deps.sh)" >&2
bash scripts/deps.sh

# Keep values the caller already set.
export DATABASE_URL="${DATABASE_URL:-postgres://vespid_app:vespid_app@127.0.0.1:${PGPORT}/vespid}"
export DATABASE_MIGRATE_URL="${DATABASE_MIGRATE_URL:-postgres://vespid_owner:vespid_owner@127.0.0.1:${PGPORT}/vespid}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:${REDIS_PORT}}"

echo "==> cargo run --release -- serve --role=all $*" >&2
exec cargo run --release --locked -- serve --role=all "$@"
