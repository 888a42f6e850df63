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

# A local Docker engine and image for the agent's Docker sandbox. Without one the server still runs.
echo "==> starting Docker for the agent sandbox (scripts/docker.sh)" >&2
if docker_env="$(bash scripts/docker.sh)"; then
    set -a; eval "$docker_env"; set +a
else
    echo "==> WARNING: no Docker engine (see above); the agent's Docker sandbox will not work" >&2
fi

# Keep values the caller already set.
export DATABASE_URL="${DATABASE_URL:-postgres://vespid_app:vespid_app@127.0.0.1:${PGPORT}/vespid}"
export DATABASE_MIGRATE_URL="${DATABASE_MIGRATE_URL:-postgres://vespid_owner:vespid_owner@127.0.0.1:${PGPORT}/vespid}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:${REDIS_PORT}}"

echo "==> cargo run --release -- serve --role=all $*" >&2
exec cargo run --release --locked -- serve --role=all "$@"
