#!/usr/bin/env python3
"""Memory phase of bench/api.sh: RSS of a running `vespid serve --role=all` idle, after a signup burst and
after a batch of runs.

    python3 bench/mem.py PID BASE_URL OWNER_DB_URL

1. idle RSS (the server has just started and answered /healthz);
2. SIGNUPS (default 50) concurrent POST /v1/auth/signup with distinct emails, all in flight at once
   (one thread each, released together by a barrier); RSS once all have answered. SIGNUP_BURSTS=N
   (default 1) repeats the burst and prints RSS after each: memory that is reused rather than given back
   shows up as growth from one burst to the next;
3. RUNS (default 10000) runs of a 3-node workflow of cheap nodes (as benches/runs.rs) created through the
   API by RUN_CLIENTS (default 32) keep-alive clients, then waits until PostgreSQL shows them all finished;
   RSS after that.
Each RSS is read from /proc/PID/status after MEM_SETTLE seconds (default 2) of quiet. Standard library only;
every step is bounded (HTTP timeouts, a 300 s deadline for the runs to finish).
"""

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, base, timeout=120):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            hdrs["content-type"] = "application/json"
            data = json.dumps(body).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, ConnectionError):
                # A keep-alive connection closed by the server: reconnect once.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def signup(base, email):
    status, body = Client(base).request(
        "POST", "/v1/auth/signup", {"email": email, "password": "Password123"}
    )
    return status, body


def signup_burst(base, n):
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        email = f"bench-mem-{uuid.uuid4().hex}@example.com"
        barrier.wait()
        try:
            results[i] = signup(base, email)
        except Exception as e:  # noqa: BLE001 - reported as a failure
            results[i] = (0, str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if r and r[0] == 201]
    return len(ok), time.monotonic() - started


def publish(c, auth, org):
    nodes = [
        {"id": f"n{i}", "type": "agent.execute" if i % 3 == 1 else "http.request"} for i in range(3)
    ]
    dsl = {"version": "v2", "trigger": {"type": "trigger.manual"}, "nodes": nodes}
    status, wf = c.request(
        "POST", f"/v1/orgs/{org}/workflows", {"name": "bench-mem", "dsl": dsl}, auth
    )
    if status != 201:
        raise RuntimeError(f"create workflow: {status} {wf}")
    wf_id = wf["workflow"]["id"]
    status, body = c.request("POST", f"/v1/orgs/{org}/workflows/{wf_id}/publish", None, auth)
    if status >= 300:
        raise RuntimeError(f"publish: {status} {body}")
    return wf_id


def finished(db_url, org, wf):
    sql = (
        f"SELECT set_config('app.current_org_id', '{org}', false);"
        f"SELECT count(*) FROM workflow_runs WHERE workflow_id = '{wf}'"
        " AND status IN ('succeeded','failed')"
    )
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", db_url, "-c", sql],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()
    return int(out[-1])


def runs_burst(base, db_url, n, clients):
    c = Client(base)
    status, s = c.request(
        "POST", "/v1/auth/signup",
        {"email": f"bench-mem-runs-{uuid.uuid4().hex}@example.com", "password": "Password123"},
    )
    if status != 201:
        raise RuntimeError(f"signup: {status} {s}")
    token = s["session"]["token"]
    _, me = c.request("GET", "/v1/me", None, {"authorization": f"Bearer {token}"})
    org = me["defaultOrgId"]
    auth = {"authorization": f"Bearer {token}", "x-org-id": org}
    wf = publish(c, auth, org)

    per, extra = divmod(n, clients)
    failed = [0] * clients

    def worker(i):
        cl = Client(base, timeout=30)
        path = f"/v1/orgs/{org}/workflows/{wf}/runs"
        for _ in range(per + (1 if i < extra else 0)):
            try:
                status, _ = cl.request("POST", path, {"input": {"n": 1}}, auth)
            except Exception:  # noqa: BLE001 - counted
                status = 0
            if status != 201:
                failed[i] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = n - sum(failed)
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline:
        done = finished(db_url, org, wf)
        if done >= created:
            break
        time.sleep(0.25)
    return created, done, time.monotonic() - started


def main():
    pid, base, db_url = sys.argv[1], sys.argv[2], sys.argv[3]
    signups = int(os.environ.get("SIGNUPS", "50"))
    runs = int(os.environ.get("RUNS", "10000"))
    clients = int(os.environ.get("RUN_CLIENTS", "32"))
    settle = float(os.environ.get("MEM_SETTLE", "2"))

    time.sleep(settle)
    print(f"{'RSS idle:':<37}{rss_mib(pid):7.1f} MiB", flush=True)

    for burst in range(int(os.environ.get("SIGNUP_BURSTS", "1"))):
        ok, secs = signup_burst(base, signups)
        time.sleep(settle)
        nth = f" #{burst + 1}" if burst else ""
        label = f"RSS after {signups} concurrent signups{nth}:"
        print(
            f"{label:<37}{rss_mib(pid):7.1f} MiB   ({ok}/{signups} created in {secs:.1f}s)",
            flush=True,
        )

    created, done, secs = runs_burst(base, db_url, runs, clients)
    time.sleep(settle)
    label = f"RSS after {runs} runs:"
    print(
        f"{label:<37}{rss_mib(pid):7.1f} MiB"
        f"   ({done}/{created} finished, {runs - created} not created, {secs:.1f}s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
