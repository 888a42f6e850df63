#!/usr/bin/env bash
# Run the test suite against real PostgreSQL and Redis on this machine.
# Extra arguments go to `cargo test`, e.g.: scripts/test.sh auth -- --nocapture
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PGPORT="${PGPORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
export PGPORT REDIS_PORT

echo "==> [test 1/3] starting PostgreSQL and Redis (scripts/deps.sh)"
bash scripts/deps.sh

# The agent's Docker sandbox tests run against a real engine and the local image. Required in CI; on a
# machine without Docker they skip themselves (with a notice), so here it is only a warning.
echo "==> [test 1/3] starting Docker and the sandbox image (scripts/docker.sh)"
if docker_env="$(bash scripts/docker.sh)"; then
    set -a; eval "$docker_env"; set +a
elif [[ -n "${CI:-}" && "${CI}" != false && "${CI}" != 0 ]]; then
    echo "==> [test] ERROR: CI needs a Docker engine for the sandbox tests, and scripts/docker.sh could not start one (see above)" >&2
    exit 1
else
    echo "==> [test] WARNING: no Docker engine (see above); the Docker sandbox tests will be skipped" >&2
fi

export DATABASE_URL="${DATABASE_URL:-postgres://vespid_app:vespid_app@127.0.0.1:${PGPORT}/vespid}"
export DATABASE_MIGRATE_URL="${DATABASE_MIGRATE_URL:-postgres://vespid_owner:vespid_owner@127.0.0.1:${PGPORT}/vespid}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:${REDIS_PORT}}"
# The tests connect here as the owner to create a template database and one database per test.
export TEST_DATABASE_ADMIN_URL="${TEST_DATABASE_ADMIN_URL:-postgres://vespid_owner:vespid_owner@127.0.0.1:${PGPORT}/postgres}"

# An S3-compatible server (moto) for the S3 workspace store's tests.
eval "$(bash scripts/s3.sh)"
export VESPID_TEST_S3_ENDPOINT

echo "==> [test 2/3] cargo test --locked $*"
cargo test --locked "$@"

# The cluster behind PGPORT, for the test that restarts PostgreSQL.
TEST_PG_CLUSTER="${TEST_PG_CLUSTER:-$(pg_lsclusters -h 2>/dev/null | awk -v p="$PGPORT" '$3==p {print $1" "$2; exit}')}"
export TEST_PG_CLUSTER

# Tests that restart shared services (PostgreSQL) run afterwards, alone. Skipped when arguments were given.
if [[ $# -eq 0 ]]; then
    echo "==> [test 3/3] cargo test --locked --test it -- --ignored --test-threads=1"
    cargo test --locked --test it -- --ignored --test-threads=1
fi
