#!/usr/bin/env python3
"""Slow-client benchmark of `llmthreads serve` (issue: a server front that cannot be starved).

Starts `llmthreads serve` on a model (KV pool 16M, filled by a warm-up), measures the latency of
a normal request unloaded, then opens N connections from this one address that trickle half a
request line (one byte per connection per second; a connection the server closes is opened again
at once, as an attacker would) and measures the same request again, plus the server's RSS
before, with the slow connections open, and at the end.

Usage: scripts/bench-slow-clients.py BUILD_DIR MODEL.gguf [N=10000] [SECONDS=20]
Prints one JSON object. Needs an open-file limit above N (it raises its soft limit to the hard).
"""
import http.client
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def one_request(port, path, body):
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    if body is None:
        c.request("GET", path)
    else:
        c.request("POST", path, body=json.dumps(body),
                  headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status}")
    return (time.perf_counter() - t0) * 1000.0


def latencies(port, n, body):
    out = {"health_ms": [], "completion_ms": []}
    for _ in range(n):
        out["health_ms"].append(one_request(port, "/health", None))
        out["completion_ms"].append(one_request(port, "/v1/completions", body))
    return {k: statistics.median(v) for k, v in out.items()}


def main():
    build, model = sys.argv[1], sys.argv[2]
    n_slow = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = 20000 + os.getpid() % 20000
    srv = subprocess.Popen([f"{build}/llmthreads", "serve", "-m", model, "--port", str(port),
                            "--threads", "1", "--chat-template", "chatml", "--kv-budget", "16M"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                one_request(port, "/health", None)
                break
            except Exception:
                time.sleep(0.05)
        body = {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}
        # Warm-up: the KV pool is an anonymous mapping whose pages are backed as blocks are
        # first used, so use it before measuring the server's RSS.
        latencies(port, 600, body)
        rss0 = rss_kib(srv.pid)
        base = latencies(port, 30, body)

        sel = selectors.DefaultSelector()
        conns = set()
        n_reopened = 0

        def open_one():
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            conns.add(s)
            sel.register(s, selectors.EVENT_READ)
            return s

        t_open = time.perf_counter()
        for _ in range(n_slow):
            open_one()
        time.sleep(0.5)
        for s in list(conns):
            try:
                s.send(b"POST /v1/comple")
            except OSError:
                pass
        t_open = time.perf_counter() - t_open
        time.sleep(2.0)
        rss_conns = rss_kib(srv.pid)
        loaded = {"health_ms": [], "completion_ms": []}
        end = time.perf_counter() + seconds
        next_trickle = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            # Server-closed (408 at the deadline, or evicted): read, close, open a new one.
            for key, _ in sel.select(timeout=0):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    conns.discard(s)
                    s.close()
                    ns = open_one()
                    n_reopened += 1
                    try:
                        ns.send(b"POST /v1/comple")
                    except OSError:
                        pass
            if time.perf_counter() >= next_trickle:
                for s in list(conns):
                    try:
                        s.send(b"t")
                    except OSError:
                        pass
                next_trickle = time.perf_counter() + 1.0
            loaded["health_ms"].append(one_request(port, "/health", None))
            loaded["completion_ms"].append(one_request(port, "/v1/completions", body))
        rss1 = rss_kib(srv.pid)
        n_fds = len(os.listdir(f"/proc/{srv.pid}/fd"))

        def pct(v, q):
            return round(sorted(v)[min(len(v) - 1, int(len(v) * q))], 2)

        result = {
            "n_slow": n_slow,
            "seconds": seconds,
            "open_s": round(t_open, 2),
            "server_fds_at_end": n_fds,
            "reopened": n_reopened,
            "unloaded_median_ms": {k: round(v, 2) for k, v in base.items()},
            "loaded_median_ms": {k: round(statistics.median(v), 2) for k, v in loaded.items()},
            "loaded_p99_ms": {k: pct(v, 0.99) for k, v in loaded.items()},
            "loaded_max_ms": {k: round(max(v), 2) for k, v in loaded.items()},
            "n_loaded_requests": len(loaded["completion_ms"]),
            "server_rss_kib_before": rss0,
            "server_rss_kib_with_slow_conns": rss_conns,
            "server_rss_kib_at_end": rss1,
        }
        print(json.dumps(result, indent=1))
        for s in conns:
            s.close()
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    main()
