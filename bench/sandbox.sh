#!/usr/bin/env bash
# Docker sandbox benchmark: latency of a `true` task through the node agent's Docker backend
# (`Sandbox::run`, until the outcome is returned), 30 times cold (create + attach + start + wait; the
# forced removal runs in the background) and 30 times through the warm pool (exec into a started idle
# container, workdir back; its kill and removal run in the background), p50/p95 of each, then 30
# warm-pool tasks back to back (bounded by how fast the pool refills: a container create + start each).
#
#   bench/sandbox.sh            (BENCH_RUNS=N to change the 30)
# Needs a Docker engine: scripts/docker.sh starts one and builds the local image (nothing is pulled).
# Targets (2-core machine): cold p50 <= 300 ms, warm p50 <= 50 ms.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

set -a; eval "$(bash scripts/docker.sh)"; set +a

echo "==> cargo test --release (the ignored bench_docker_sandbox test)" >&2
exec cargo test --release --locked --lib node_agent::sandbox::docker::tests::bench_docker_sandbox \
    -- --ignored --nocapture --test-threads=1
