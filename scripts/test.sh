#!/usr/bin/env bash
# Run the test suite against real PostgreSQL and Redis on this machine.
# Extra arguments go to `cargo test`, e.g.: scripts/test.sh auth -- --nocapture
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PGPORT="${PGPORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
export PGPORT REDIS_PORT

echo "==> [test 1/2] starting PostgreSQL and Redis (scripts/deps.sh)"
bash scripts/deps.sh

export DATABASE_URL="${DATABASE_URL:-postgres://vespid_app:vespid_app@127.0.0.1:${PGPORT}/vespid}"
export DATABASE_MIGRATE_URL="${DATABASE_MIGRATE_URL:-postgres://vespid_owner:vespid_owner@127.0.0.1:${PGPORT}/vespid}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:${REDIS_PORT}}"
# The tests connect here as the owner to create a template database and one database per test.
export TEST_DATABASE_ADMIN_URL="${TEST_DATABASE_ADMIN_URL:-postgres://vespid_owner:vespid_owner@127.0.0.1:${PGPORT}/postgres}"

echo "==> [test 2/2] cargo test --locked $*"
exec cargo test --locked "$@"
