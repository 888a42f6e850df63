#!/usr/bin/env bash
# A local S3-compatible server for the tests of the S3 workspace store: moto (from PyPI) in server mode
# on 127.0.0.1:${S3_TEST_PORT:-5055}. Idempotent: installs it into a virtualenv once, starts it when it does
# not answer. Prints the endpoint as VESPID_TEST_S3_ENDPOINT=….
set -euo pipefail
PORT="${S3_TEST_PORT:-5055}"
VENV="${MOTO_VENV:-/opt/vespid-moto}"
ENDPOINT="http://127.0.0.1:${PORT}"

answering() { curl -fsS -o /dev/null "${ENDPOINT}/" 2>/dev/null; }

if ! answering; then
    if [[ ! -x "${VENV}/bin/moto_server" ]]; then
        echo "[s3] installing moto[server] into ${VENV}" >&2
        python3 -m venv "${VENV}"
        "${VENV}/bin/pip" install -q 'moto[server]' >&2
    fi
    echo "[s3] starting moto on ${ENDPOINT}" >&2
    nohup "${VENV}/bin/moto_server" -H 127.0.0.1 -p "${PORT}" > /tmp/vespid-moto.log 2>&1 &
    for _ in $(seq 1 100); do
        answering && break
        sleep 0.1
    done
    answering || { echo "[s3] moto did not start (see /tmp/vespid-moto.log)" >&2; exit 1; }
fi
echo "[s3] ok: S3-compatible server on ${ENDPOINT}" >&2
echo "VESPID_TEST_S3_ENDPOINT=${ENDPOINT}"
