"""A load generator for the fault tests: threads sending HTTP requests to
a server until told to stop, counting what each request got.

A request *fails* when it was sent on an open connection and no whole
response came back: the count the fault tests bound. A connection refused
(or reset while it was being made) is not a failed request: nothing was
sent. And a response saying
``Connection: close`` ends that connection cleanly: the client reconnects.
"""

from __future__ import annotations

import collections
import threading
import time

from ._http_client import Client


class Load:
    """``keep_alive`` clients reuse their connection; ``fresh`` clients open
    one per request (exercising the accept queues)."""

    def __init__(self, address: tuple, path: str = "/who", keep_alive: int = 4,
                 fresh: int = 4, timeout: float = 10.0) -> None:
        self.address = address
        self.path = path
        self.timeout = timeout
        self.ok = 0
        #: (when its connection was made, what went wrong), per failed request.
        self.failures: list[tuple[float, str]] = []
        self.refused = 0
        #: Answers per worker (the first word of a /who answer), and per body.
        self.by_worker: collections.Counter[str] = collections.Counter()
        self.answers: collections.Counter[bytes] = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(True,), daemon=True)
                         for _ in range(keep_alive)]
        self._threads += [threading.Thread(target=self._client, args=(False,), daemon=True)
                          for _ in range(fresh)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def failed_on_connections_made_before(self, moment: float) -> list[str]:
        """The failed requests sent on connections made before ``moment``."""
        return [what for connected_at, what in self.failures if connected_at < moment]

    def wait_for(self, answers: int, timeout: float = 20.0) -> None:
        """Until ``answers`` more requests were answered."""
        target = self.ok + answers
        deadline = time.monotonic() + timeout
        while self.ok < target:
            assert time.monotonic() < deadline, f"only {self.ok} answers; {self.failures[:3]}"
            time.sleep(0.01)

    def _client(self, keep_alive: bool) -> None:
        headers = [] if keep_alive else [("Connection", "close")]
        while not self._stop.is_set():
            try:
                client = Client(self.address, self.timeout)
            except OSError:
                # Refused (or reset before it was made): nothing was sent.
                with self._lock:
                    self.refused += 1
                time.sleep(0.01)
                continue
            connected_at = time.monotonic()
            with client:
                while not self._stop.is_set():
                    try:
                        reply = client.get(self.path, headers)
                    except (OSError, AssertionError) as exc:
                        with self._lock:
                            self.failures.append((connected_at, repr(exc)))
                        break
                    with self._lock:
                        self.ok += 1
                        self.by_worker[reply.body.split()[0].decode()] += 1
                        self.answers[reply.body] += 1
                    if not keep_alive or reply.headers.get("connection") == "close":
                        break
