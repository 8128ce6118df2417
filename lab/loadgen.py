"""
Client traffic at a fixed rate through a VIP, one thread per request, for the lab's tests and
benchmarks: who was served, how, and how long it took.

:func:`run` paces requests on a schedule (not back to back), so a slow or hung backend never
slows the offered load down, exactly as many independent API clients would behave.
"""

import http.client
import threading
import time


class Result:
    """One request: ``sent`` (seconds after the run began), ``status`` (None when the request
    failed without an HTTP answer), ``elapsed`` seconds, ``error`` text, ``request_id``."""

    __slots__ = ("sent", "status", "elapsed", "error", "request_id")

    def __init__(self, sent, request_id=None):
        self.sent, self.request_id = sent, request_id
        self.status, self.elapsed, self.error = None, None, None

    def bad(self, ok_status=200, slow=2.0):
        """True when this request failed or took longer than ``slow`` seconds."""
        return self.status != ok_status or self.elapsed is None or self.elapsed > slow

    def __repr__(self):
        # ``sent`` is an epoch once a caller made it one (labtools.load_while): shown as the
        # time of day, to match with the master's log.
        when = time.strftime("%H:%M:%S", time.gmtime(self.sent)) + "{:.3f}".format(self.sent % 1)[1:] \
            if self.sent > 1e9 else "{:.3f}".format(self.sent)
        return "<{} sent {} {} {}s {}>".format(self.request_id or "", when, self.status,
                                                None if self.elapsed is None else round(self.elapsed, 3), self.error or "")


def request(address, port, result, method="GET", path="/", timeout=5.0):
    """Send one request (a new connection, as most OpenStack clients do) and fill ``result``."""
    start = time.monotonic()
    headers = {"X-Request-Id": result.request_id} if result.request_id else {}
    body = b"{}" if method == "POST" else None
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    step = "connect"  # which step failed says where a request was lost: the handshake or the answer
    try:
        conn.connect()
        step = "send"
        conn.request(method, path, body=body, headers=headers)
        step = "answer"
        response = conn.getresponse()
        response.read()
        result.status = response.status
    except (OSError, http.client.HTTPException) as exc:
        result.error = "{}: {} ({})".format(type(exc).__name__, exc, step)
    finally:
        result.elapsed = time.monotonic() - start
        conn.close()
    return result


def start(address, port, method="GET", request_id=None, timeout=5.0):
    """Send one request in the background; returns (thread, result)."""
    result = Result(0.0, request_id)
    thread = threading.Thread(target=request, args=(address, port, result, method, "/", timeout), daemon=True)
    thread.start()
    return thread, result


def run(address, port, rate, seconds, events=None, timeout=5.0):
    """
    GET ``http://address:port/`` ``rate`` times a second for ``seconds`` seconds.

    events
        optional {seconds_after_start: callable}: each is called once, from the pacing loop,
        when its time comes (to stop a backend mid-run, for instance).

    Returns the list of :class:`Result`, in sending order, after every request finished or
    gave up (each has its own ``timeout``).
    """
    pending = sorted((events or {}).items())
    results, threads = [], []
    begin = time.monotonic()
    for i in range(int(rate * seconds)):
        due = begin + i / rate
        time.sleep(max(0.0, due - time.monotonic()))
        while pending and time.monotonic() - begin >= pending[0][0]:
            pending.pop(0)[1]()
        result = Result(time.monotonic() - begin)
        thread = threading.Thread(target=request, args=(address, port, result, "GET", "/", timeout), daemon=True)
        thread.start()
        results.append(result)
        threads.append(thread)
    for _, action in pending:  # events scheduled after the last request still happen
        action()
    deadline = time.monotonic() + timeout + 2
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return results


def summary(results, slow=2.0):
    """A one-line account of a run: total, failed, slow, median and worst latency."""
    done = sorted(r.elapsed for r in results if r.elapsed is not None)
    failed = sum(1 for r in results if r.status != 200)
    slow_n = sum(1 for r in results if r.status == 200 and r.elapsed > slow)
    if not done:
        return "{} requests, none finished".format(len(results))
    return "{} requests: {} failed, {} slower than {:g} s; latency median {:.3f} s, max {:.3f} s".format(
        len(results), failed, slow_n, slow, done[len(done) // 2], done[-1])
