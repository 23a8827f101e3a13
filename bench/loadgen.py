#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible server (llmthreads serve, llama-server, ...).

Python 3 standard library only. Sends --requests requests (after --warmup unmeasured ones) with
at most --concurrency in flight to POST /v1/completions or /v1/chat/completions, and prints one
JSON object on stdout:

  requests, ok, errors (by HTTP status or error kind), wall_s, req_s,
  ttft_ms {p50, p90, p99}, itl_ms {p50, p99}, latency_ms {p50, p90, p99},
  completion_tokens (sum of usage.completion_tokens where reported), and with
  --high-priority-fraction the same latency figures per class under "by_priority".

Timing, per request, from just before the request is sent:
  - latency: until the whole response has been read;
  - TTFT with --stream: until the first SSE `data:` chunk carrying generated text (a non-empty
    choices[].text or choices[].delta.content); without --stream, TTFT = latency;
  - ITL (--stream only): the gaps between consecutive content chunks of a request.
Percentiles are nearest-rank over the successful requests (ITL: over all gaps of all of them).

Bounded: at most --requests requests, each with a --timeout socket timeout, and no new request
starts after --max-wall seconds (those not started count as errors["not_started"]).

The default prompt is a sentiment-classification instruction of about 220 tokens followed by one of 8 short reviews and an order number, the shape of the load in
../shared/reference/baseline-llamacpp.md section 6 (every prompt shares the instruction).

Example:
  python3 bench/loadgen.py --url http://127.0.0.1:8080 --requests 64 --concurrency 8 \
      --max-tokens 8 --high-priority-fraction 0.1 --stream
"""

import argparse
import http.client
import json
import math
import random
import sys
import threading
import time
import urllib.parse

# 218 tokens with synth-125m's vocabulary; whole prompts (with review, order number and
# "Label:") are 244-250 tokens (the baseline's were 237-242 with the GPT-2 vocabulary).
INSTRUCTION = (
    "You will act as a sentiment rater for short customer reviews of items bought in an "
    "online shop (kitchen gadgets, books, clothes, toys). Each review is shown after the word Review, followed by "
    "the order number it belongs to.\n\n"
    "Your job is to decide how the customer feels about the item overall, and to answer with a "
    "single lowercase word chosen from this list:\n"
    "- positive: the customer is satisfied, praises the item, or says they would buy it again;\n"
    "- negative: the customer is unhappy, describes a defect or a bad experience, or asks for a "
    "refund;\n"
    "- mixed: the review contains clear praise and clear complaints of similar weight;\n"
    "- neutral: the review only states facts such as delivery dates or sizes.\n\n"
    "Rules: consider the whole review rather than single words; irony that praises a failure "
    "counts as negative; a late courier alone does not make a review negative. Ignore the "
    "order number and spelling errors. "
    "Write only the label, with no explanation.\n\n"
)

REVIEWS = (
    "The kettle boils fast. Very happy.",
    "Zipper broke on day two. Refund please.",
    "Arrived Tuesday, size 42 as ordered.",
    "Great sound, but the pads hurt.",
    "My daughter plays with it every day!",
    "Pages torn, cover bent. Disappointing.",
    "Works well. Courier was late though.",
    "Oh wonderful, it died in a week. Amazing.",
)


def build_prompt(i, base):
    """Prompt i: the instruction + review i % 8 + an order number unique to i."""
    if base is not None:
        return base
    return "%sReview: %s\nOrder number: %d\nLabel:" % (INSTRUCTION, REVIEWS[i % len(REVIEWS)],
                                                       40000 + 37 * i)


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a list; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k]


def ms(v):
    return None if v is None else round(v * 1000.0, 2)


class Client:
    """One keep-alive HTTP connection per worker thread (not shared between threads)."""

    def __init__(self, url, timeout, api_key):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            raise ValueError("only http:// URLs are supported (loopback load generation)")
        self.host = u.hostname
        self.port = u.port or 80
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = "Bearer " + api_key
        self.conn = None

    def _connect(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def get_json(self, path):
        conn = self._connect()
        try:
            conn.request("GET", self.prefix + path, headers=self.headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return None
            return json.loads(body)
        except (OSError, http.client.HTTPException, ValueError):
            self.close()
            return None

    def post(self, path, body, stream):
        """Sends one request; returns a dict with status, t_first, gaps, latency, tokens, error."""
        data = json.dumps(body).encode()
        out = {"status": None, "t_first": None, "gaps": [], "latency": None, "tokens": None,
               "error": None}
        t0 = time.perf_counter()
        for attempt in (0, 1):
            conn = self._connect()
            try:
                conn.request("POST", self.prefix + path, body=data, headers=self.headers)
                resp = conn.getresponse()
                break
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                    http.client.CannotSendRequest) as e:
                # A keep-alive connection the server closed while idle: retry once, fresh.
                self.close()
                if attempt == 1:
                    out["error"] = type(e).__name__
                    return out
                t0 = time.perf_counter()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                out["error"] = "timeout" if "timed out" in str(e) else type(e).__name__
                return out
        out["status"] = resp.status
        try:
            if resp.status != 200 or not stream:
                payload = resp.read()
                out["latency"] = time.perf_counter() - t0
                if resp.status == 200:
                    doc = json.loads(payload)
                    out["tokens"] = (doc.get("usage") or {}).get("completion_tokens")
                    out["t_first"] = out["latency"]
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return out
            last = None
            saw_done = False
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    saw_done = True
                    break
                now = time.perf_counter()
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    out["error"] = "bad_sse_json"
                    continue
                if "error" in chunk:
                    out["error"] = "stream_error"
                usage = chunk.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    out["tokens"] = usage["completion_tokens"]
                has_content = False
                for c in chunk.get("choices") or []:
                    text = c.get("text")
                    if text is None:
                        text = (c.get("delta") or {}).get("content")
                    if text:
                        has_content = True
                if has_content:
                    if last is None:
                        out["t_first"] = now - t0
                    else:
                        out["gaps"].append(now - last)
                    last = now
            # Drain whatever follows [DONE] so that the connection can be reused.
            if saw_done:
                resp.read()
            out["latency"] = time.perf_counter() - t0
            if not saw_done and out["error"] is None:
                out["error"] = "stream_without_done"
            if resp.getheader("Connection", "").lower() == "close" or not saw_done:
                self.close()
        except (OSError, http.client.HTTPException, ValueError) as e:
            self.close()
            out["error"] = "timeout" if "timed out" in str(e) else type(e).__name__
            out["latency"] = time.perf_counter() - t0
        return out


def make_body(args, i, model, prompt, priority):
    body = {"model": model, "max_tokens": args.max_tokens, "temperature": args.temperature,
            "stream": args.stream}
    if args.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if args.seed is not None:
        body["seed"] = args.seed
    if priority is not None:
        body["priority"] = priority
    if args.stream and args.stream_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(args.extra)
    return body


def summarize(results, wall_s=None):
    def is_ok(r):
        return r["status"] == 200 and r["error"] is None

    ok = [r for r in results if is_ok(r)]
    ttft = [r["t_first"] for r in ok if r["t_first"] is not None]
    lat = [r["latency"] for r in ok]
    gaps = [g for r in ok for g in r["gaps"]]
    out = {"requests": len(results), "ok": len(ok)}
    errors = {}
    for r in results:
        if is_ok(r):
            continue
        key = r["error"] if r["status"] in (None, 200) else str(r["status"])
        errors[key] = errors.get(key, 0) + 1
    out["errors"] = errors
    if wall_s is not None:
        out["wall_s"] = round(wall_s, 3)
        out["req_s"] = round(len(ok) / wall_s, 3) if wall_s > 0 else None
    out["ttft_ms"] = {"p50": ms(percentile(ttft, 50)), "p90": ms(percentile(ttft, 90)),
                      "p99": ms(percentile(ttft, 99))}
    out["itl_ms"] = {"p50": ms(percentile(gaps, 50)), "p99": ms(percentile(gaps, 99))}
    out["latency_ms"] = {"p50": ms(percentile(lat, 50)), "p90": ms(percentile(lat, 90)),
                         "p99": ms(percentile(lat, 99))}
    toks = [r["tokens"] for r in ok if r["tokens"] is not None]
    if toks:
        out["completion_tokens"] = sum(toks)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    ap.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    ap.add_argument("--model", default=None,
                    help="model name to send (default: first id of GET /v1/models, else 'default')")
    ap.add_argument("--api-key", default=None, help="sent as Authorization: Bearer KEY")
    ap.add_argument("--requests", type=int, default=64, help="measured requests")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured requests sent first")
    ap.add_argument("--stream", action="store_true", help="SSE streaming (measures TTFT and ITL)")
    ap.add_argument("--stream-usage", action="store_true",
                    help="with --stream, ask for usage in the last chunk (stream_options)")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None, help="sampling seed sent with requests")
    ap.add_argument("--prompt-file", default=None,
                    help="use this file's text as every prompt instead of the built-in one")
    ap.add_argument("--high-priority-fraction", type=float, default=0.0,
                    help="fraction of requests sent with priority 10 (others 0)")
    ap.add_argument("--high-priority", type=int, default=10, help="priority of the high class")
    ap.add_argument("--mix-seed", type=int, default=1,
                    help="seed choosing which requests are high priority")
    ap.add_argument("--extra", default="{}",
                    help='JSON object merged into every body, e.g. \'{"ignore_eos": true}\'')
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request socket timeout, s")
    ap.add_argument("--max-wall", type=float, default=600.0,
                    help="no request starts after this many seconds of the measured run")
    args = ap.parse_args(argv)

    if args.requests < 0 or args.concurrency < 1 or args.warmup < 0:
        ap.error("--requests >= 0, --concurrency >= 1 and --warmup >= 0 are required")
    if not 0.0 <= args.high_priority_fraction <= 1.0:
        ap.error("--high-priority-fraction must be in [0, 1]")
    try:
        args.extra = json.loads(args.extra)
        if not isinstance(args.extra, dict):
            raise ValueError
    except ValueError:
        ap.error("--extra must be a JSON object")

    base_prompt = None
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            base_prompt = f.read()

    probe = Client(args.url, args.timeout, args.api_key)
    model = args.model
    if model is None:
        doc = probe.get_json("/v1/models")
        try:
            model = doc["data"][0]["id"]
        except (TypeError, KeyError, IndexError):
            model = "default"
    probe.close()
    path = "/v1/chat/completions" if args.endpoint == "chat" else "/v1/completions"

    # Which requests are high priority: exactly round(F * N) of them, spread by a seeded shuffle.
    use_priority = args.high_priority_fraction > 0.0
    n_high = int(round(args.high_priority_fraction * args.requests))
    order = list(range(args.requests))
    random.Random(args.mix_seed).shuffle(order)
    high = set(order[:n_high])

    def run_phase(indices, priorities, deadline):
        results = [None] * len(indices)
        lock = threading.Lock()
        next_i = [0]

        def worker():
            client = Client(args.url, args.timeout, args.api_key)
            try:
                while True:
                    with lock:
                        k = next_i[0]
                        if k >= len(indices):
                            return
                        next_i[0] += 1
                    i = indices[k]
                    if deadline is not None and time.perf_counter() > deadline:
                        results[k] = {"status": None, "error": "not_started", "t_first": None,
                                      "gaps": [], "latency": None, "tokens": None}
                        continue
                    body = make_body(args, i, model, build_prompt(i, base_prompt), priorities(i))
                    results[k] = client.post(path, body, args.stream)
            finally:
                client.close()

        threads = [threading.Thread(target=worker, daemon=True)
                   for _ in range(min(args.concurrency, max(1, len(indices))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    # Warm-up: its own order numbers (indices past the measured ones).
    if args.warmup:
        warm = run_phase([args.requests + k for k in range(args.warmup)],
                         lambda i: 0 if use_priority else None, None)
        bad = [r for r in warm if r["status"] != 200 or r["error"]]
        if bad:
            print("loadgen: %d of %d warm-up requests failed (first: status %s, %s)" %
                  (len(bad), len(warm), bad[0]["status"], bad[0]["error"]), file=sys.stderr)

    t0 = time.perf_counter()
    results = run_phase(list(range(args.requests)),
                        (lambda i: (args.high_priority if i in high else 0)) if use_priority
                        else (lambda i: None),
                        t0 + args.max_wall)
    wall = time.perf_counter() - t0

    report = {"url": args.url, "endpoint": path, "model": model, "stream": args.stream,
              "concurrency": args.concurrency, "max_tokens": args.max_tokens,
              "warmup": args.warmup}
    report.update(summarize(results, wall))
    if use_priority:
        report["by_priority"] = {
            "high": dict(summarize([r for k, r in enumerate(results) if k in high]),
                         priority=args.high_priority),
            "low": dict(summarize([r for k, r in enumerate(results) if k not in high]),
                        priority=0),
        }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
