"""``python -m bench.flood``: hold N simultaneous HTTP requests open from one process.

wrk reports rates, not whether each of thousands of long requests came back with
the right answer, so the concurrency row uses this client instead: one greenlet
and one connection per request, all started at once, each checked for status 200
and the expected ``result``. It prints one JSON summary line on stdout.

It uses gevent's socket module directly (no monkey-patching): nothing else in
this process does I/O.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from typing import Any

import gevent
from gevent import socket
from gevent.pool import Group

from bench.procs import raise_fd_limit

READ_BYTES = 65536


def request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 POST that asks the server to close afterwards."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """Status code and body of one whole response (Content-Length framed)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def send_one(
    address: tuple[str, int], payload: bytes, timeout_s: float, expected: Any
) -> tuple[str, float]:
    """One request: its outcome (``ok`` or what went wrong) and its latency."""
    start = time.monotonic()
    try:
        with gevent.Timeout(timeout_s), socket.create_connection(address) as conn:
            conn.sendall(payload)
            raw = _read_all(conn)
    except gevent.Timeout:
        return "timeout", time.monotonic() - start
    except OSError as exc:
        return f"socket error {exc.__class__.__name__}", time.monotonic() - start

    latency_s = time.monotonic() - start
    status, body = parse_response(raw)
    if status != 200:
        return f"HTTP {status}", latency_s
    try:
        resource = json.loads(body)
    except ValueError:
        return "not JSON", latency_s
    if resource.get("status") != "succeeded" or resource.get("result") != expected:
        return "wrong result", latency_s
    return "ok", latency_s


def flood(
    host: str,
    port: int,
    path: str,
    body: bytes,
    count: int,
    timeout_s: float,
    expected: Any,
) -> dict[str, Any]:
    """Send ``count`` requests at once and wait for all; a JSON-ready summary."""
    payload = request_bytes(host, port, path, body)
    group = Group()
    start = time.monotonic()
    jobs = [
        group.spawn(send_one, (host, port), payload, timeout_s, expected)
        for _ in range(count)
    ]
    group.join()
    elapsed_s = time.monotonic() - start

    outcomes = Counter(job.value[0] for job in jobs)
    latencies = sorted(job.value[1] for job in jobs if job.value[0] == "ok")
    return {
        "count": count,
        "ok": outcomes.get("ok", 0),
        "outcomes": dict(outcomes),
        "p50_s": statistics.median(latencies) if latencies else None,
        "p99_s": latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
        "elapsed_s": elapsed_s,
    }


def _read_all(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = conn.recv(READ_BYTES)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def main() -> None:
    """Parse the options, flood, print the summary."""
    parser = argparse.ArgumentParser(
        description="N simultaneous HTTP POSTs with gevent."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", required=True, help="JSON request body")
    parser.add_argument("--expect", required=True, help="JSON of the expected result")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, required=True)
    options = parser.parse_args()

    raise_fd_limit()
    summary = flood(
        options.host,
        options.port,
        options.path,
        options.body.encode(),
        options.count,
        options.timeout_s,
        json.loads(options.expect),
    )
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
