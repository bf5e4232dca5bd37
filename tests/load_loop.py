"""A steady stream of chat requests through one address, from several clients, counting what a user would notice:
requests that failed, streams that ended with ``finish_reason: "abort"`` or before ``[DONE]``, and the longest
time without a completed answer. For rollouts on the real node (tests/integration/test_rollout_real_node.py,
bench/rollout_bench.py). Standard library only.

The clients are the ways a caller meets a pod that goes away:
- ``keepalive``: one HTTP/1.1 connection reused, as a connection pool does. Before each request it checks whether the
  server closed the connection (urllib3's ``is_connection_dropped``) and opens a new one if so; a request sent on a
  connection that then fails counts as failed (a POST is not retried).
- ``new``: a new connection per request;
- ``stream``: a new connection per streamed request, read to the end.

Bounded: each client stops at ``stop()``, after ``max_requests`` requests in all, or after ``max_seconds``; each
request has ``timeout`` seconds.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import select
import threading
import time
import typing as t

CHAT = "/v1/chat/completions"


@dataclasses.dataclass
class Outcome:
    client: str
    started: float
    ended: float
    ok: bool
    # "" when ok; else what went wrong: "abort" (finish_reason), "cut" (a stream ended before [DONE]), an HTTP status,
    # or the exception's class and text.
    error: str = ""


class LoadLoop:
    """Start with ``with LoadLoop(...) as load:``; ``load.summary()`` after the block (or ``stop()``)."""

    def __init__(
        self,
        host: str,
        port: int,
        model: str,
        clients: t.Sequence[str] = ("keepalive", "new", "stream", "stream"),
        max_tokens: int = 40,
        max_requests: int = 20000,
        max_seconds: float = 600.0,
        timeout: float = 30.0,
    ) -> None:
        self.host, self.port, self.model = host, port, model
        self.clients, self.max_tokens = tuple(clients), max_tokens
        self.max_requests, self.max_seconds, self.timeout = max_requests, max_seconds, timeout
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = self.stopped = 0.0

    def __enter__(self) -> LoadLoop:
        self.started = time.monotonic()
        for index, kind in enumerate(self.clients):
            thread = threading.Thread(target=self._client, args=(kind,), name=f"load-{kind}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.stopped = self.stopped or time.monotonic()

    def wait_for_answers(self, count: int, seconds: float) -> bool:
        """Whether ``count`` answers came back within ``seconds`` (the loop reaches its target)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if sum(o.ok for o in list(self.outcomes)) >= count:
                return True
            time.sleep(0.1)
        return False

    # --------------------------------------------------------------------------------------------- clients

    def _go_on(self) -> bool:
        with self._lock:
            count = len(self.outcomes)
        in_time = time.monotonic() - self.started < self.max_seconds
        return not self._stop.is_set() and count < self.max_requests and in_time

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _client(self, kind: str) -> None:
        conn: http.client.HTTPConnection | None = None
        while self._go_on():
            if kind != "keepalive" or conn is None or _dropped(conn):
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            started = time.monotonic()
            try:
                error = self._request(conn, stream=kind == "stream")
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = None
                time.sleep(0.05)  # a refused connection comes back at once: do not spin
            self._record(Outcome(kind, started, time.monotonic(), not error, error))
            if kind != "keepalive" and conn is not None:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _request(self, conn: http.client.HTTPConnection, stream: bool) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Count to forty."}],
            "max_tokens": self.max_tokens,
            "stream": stream,
        }
        conn.request("POST", CHAT, json.dumps(body), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            return f"HTTP {answer.status}"
        if not stream:
            finish = json.loads(data)["choices"][0].get("finish_reason")
            return "abort" if finish == "abort" else ""
        events = [line[6:] for line in data.decode().splitlines() if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            return "cut"
        finishes = [c.get("finish_reason") for e in events[:-1] for c in json.loads(e).get("choices", [])]
        return "abort" if "abort" in finishes else ""

    # --------------------------------------------------------------------------------------------- results

    def summary(self) -> dict[str, t.Any]:
        """Requests, failed ones (by error), aborted streams and answers, and the longest time without an answer
        (from the start, between completed answers, to the stop)."""
        outcomes = sorted(self.outcomes, key=lambda o: o.ended)
        answered = [o.ended for o in outcomes if o.ok]
        marks = [self.started, *answered, self.stopped or time.monotonic()]
        gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
        failed = [o for o in outcomes if not o.ok]
        errors: dict[str, int] = {}
        for o in failed:
            key = o.error.split(":", 1)[0]
            errors[key] = errors.get(key, 0) + 1
        return {
            "requests": len(outcomes),
            "answered": len(answered),
            "failed": len(failed),
            "aborted": sum(o.error in ("abort", "cut") for o in failed),
            "errors": errors,
            "first_errors": [f"{o.client}: {o.error}" for o in failed[:5]],
            "longest_gap_s": round(max(gaps), 2) if gaps else 0.0,
            "seconds": round((self.stopped or time.monotonic()) - self.started, 2),
        }


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether the server closed a kept-alive connection (readable with nothing to read), as urllib3 checks."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable = select.select([sock], [], [], 0)[0]
    except (OSError, ValueError):
        return True
    return bool(readable)
