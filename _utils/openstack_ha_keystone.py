"""
A small client of Keystone's v3 API: a token, and the catalog's regions, services and endpoints.

:depends: ``requests``.

Used by the runner on the master, where the admin credentials live; it never runs on a
controller. Every failure raises :class:`KeystoneError` with a ``kind`` the runner turns into
an alert (``auth``: the credentials were refused; ``unreachable``: no Keystone answered;
``api``: Keystone answered with an error) and a message that names the Keystone URL and what
went wrong, never the password.

Plain Python, so the unit tests and the benchmarks load it directly too.
"""

import calendar
import threading
import time

import requests
import requests.adapters

# A Keystone that does not accept a connection within this many seconds is skipped for the
# next candidate URL (a dead controller must not hold up a repoint).
CONNECT_TIMEOUT = 1.0
# A token is renewed this long before Keystone says it expires.
TOKEN_MARGIN = 300
# What a proxy in front of Keystone (HAProxy on the VIP) answers when no Keystone behind it
# does: the request went nowhere, so the next URL is tried as after a refused connection.
GATEWAY_FAILURES = (502, 503, 504)
# Requests sent once more after Keystone itself answers 500 (typically its database connection
# was cut under it, by a Galera failover: the next request gets a new one). Each gives the same
# result when repeated; a DELETE whose retry finds nothing (404) had taken effect.
RETRIED_ON_500 = ("GET", "PATCH", "DELETE")
# A GET or PATCH (same result when repeated) still unanswered after this many seconds is sent
# once more on a new connection, with the full timeout: through the VIP, HAProxy gives it to
# another Keystone. A request caught on a connection while the VIP moved otherwise waits out
# the whole timeout (5 s by default) before anything else is tried.
QUICK_READ = 2.0


class KeystoneError(Exception):
    """A Keystone request failed. ``kind``: ``auth``, ``unreachable`` or ``api``."""

    def __init__(self, kind, message, status=None):
        self.kind = kind
        self.status = status  # Keystone's HTTP status, when it answered
        super().__init__(message)


def _expiry(text):
    """Seconds since the epoch of a Keystone ``expires_at`` (``2026-11-22T10:00:00.000000Z``)."""
    try:
        return calendar.timegm(time.strptime(text.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S"))
    except (AttributeError, ValueError):
        return time.time() + 600


class Keystone:
    """
    One admin session with Keystone.

    urls
        candidate base URLs of the v3 API (``http://10.0.0.100:5000/v3``), tried in order; the
        first that answers is used until it stops answering.
    username, password, project, user_domain, project_domain
        the admin account (password scope on ``project``).
    timeout
        seconds a request may take once connected.
    """

    def __init__(self, urls, username, password, project="admin", user_domain="Default",
                 project_domain="Default", timeout=5.0):
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            raise KeystoneError("api", "no Keystone URL to talk to")
        self.urls = [u.rstrip("/") for u in urls]
        self._auth = {"identity": {"methods": ["password"], "password": {"user": {
            "name": username, "password": password, "domain": {"name": user_domain}}}},
            "scope": {"project": {"name": project, "domain": {"name": project_domain}}}}
        self.timeout = float(timeout)
        self.session = requests.Session()
        self._mount()
        self.url = None
        self.token = None
        self.expires = 0.0
        self.catalog = None
        # Requests run in parallel threads (a site's endpoint updates): the URL and token are
        # read and replaced under this lock, so one thread's fall-back never leaves another
        # with half of it, and a refused or lost token is renewed once, not once per thread.
        self._lock = threading.RLock()
        # What the session had to work around, for the runner's records: tokens issued, kept
        # connections found reset, GET/PATCH sent again after QUICK_READ, URLs given up.
        self.counts = {"tokens": 0, "resets": 0, "quick_retries": 0, "fallbacks": 0}

    # ------------------------------------------------------------------ token

    def authenticate(self, force=False):
        """Get a token from the first candidate URL that answers (kept until near its expiry).
        Returns the base URL used. Raises KeystoneError (``auth`` on refused credentials:
        no other URL is tried then; ``unreachable`` when none answered)."""
        with self._lock:
            if not force and self.token and self.url and time.time() < self.expires - TOKEN_MARGIN:
                return self.url
            return self._new_token()

    def _new_token(self):
        failures = []
        ordered = ([self.url] if self.url else []) + [u for u in self.urls if u != self.url]
        for url in ordered:
            try:
                resp = self.session.post(url + "/auth/tokens", json={"auth": self._auth},
                                         timeout=(CONNECT_TIMEOUT, self.timeout))
            except requests.RequestException as exc:
                failures.append("{}: {}".format(url, type(exc).__name__))
                continue
            if resp.status_code == 401:
                raise KeystoneError("auth", "Keystone at {} refused the admin credentials (401): check "
                                            "openstack_ha_keystone in the master config".format(url))
            if resp.status_code >= 500:
                failures.append("{}: HTTP {}".format(url, resp.status_code))
                continue
            if resp.status_code != 201:
                raise KeystoneError("api", "Keystone at {} answered the token request with HTTP {}: {}".format(
                    url, resp.status_code, _message(resp)))
            if "X-Subject-Token" not in resp.headers:
                raise KeystoneError("api", "{} answered the token request (HTTP 201) without an X-Subject-Token "
                                           "header: not Keystone's answer (another server on its port?): {}".format(
                                               url, _message(resp)))
            body = resp.json().get("token") or {}
            self.counts["tokens"] += 1
            self.url, self.token = url, resp.headers["X-Subject-Token"]
            self.expires = _expiry(body.get("expires_at"))
            self.catalog = body.get("catalog")
            return url
        self.token = None
        raise KeystoneError("unreachable", "no Keystone answered ({})".format("; ".join(failures)))

    def _mount(self):
        # Room for a whole site's endpoint updates in flight at once (see openstack_ha_catalog.apply).
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, requests.adapters.HTTPAdapter(pool_maxsize=32))

    def prefer_first(self):
        """Start afresh for a new burst of requests: the first candidate URL again (the VIP,
        where HAProxy spreads them over every Keystone), on new connections, with the same
        token (it is good on every Keystone of the site). A fall-back to one controller, taken
        while the VIP was moving, must not leave every later burst on that one controller's
        workers; and the connections kept from before a VIP move are dead (each would cost a
        reset and a second try). Requests in flight keep their connections."""
        with self._lock:
            if self.url is not None:
                self.url = self.urls[0]
            self._mount()

    def fresh_catalog(self):
        """The catalog a client sees: a new token request's ``catalog`` (what an OpenStack
        client would use). Returns ``[{type, name, endpoints: [{interface, region, url}]}]``."""
        self.authenticate(force=True)
        return self.catalog

    # ------------------------------------------------------------------ requests

    def request(self, method, path, body=None, ok=(200,)):
        """One API call on ``path`` (``/endpoints``) with the admin token; renews an expired
        token once, moves to the next URL when this one stops answering. Returns the JSON
        body (or None). Raises KeystoneError."""
        try:
            return self._request(method, path, body, ok)
        except KeystoneError as exc:
            if method not in RETRIED_ON_500 or exc.status != 500:
                raise
        return self._request(method, path, body, ok + (404,) if method == "DELETE" else ok)

    def _current(self, failed_token=None):
        """(url, token) to send the next request with; a new token first when there is none,
        or when ``failed_token`` (refused, or its URL lost) is still the current one."""
        with self._lock:
            if failed_token is not None and failed_token == self.token:
                self._new_token()
            else:
                self.authenticate()
            return self.url, self.token

    def _drop(self, url):
        """``url`` stopped answering: the next :meth:`_current` looks for another (unless
        another thread has moved on already)."""
        with self._lock:
            self.counts["fallbacks"] += 1
            if self.url == url:
                self.url = None

    def _count(self, what):
        with self._lock:
            self.counts[what] += 1

    def _send(self, url, token, method, path, body):
        """One HTTP request, sent at most twice to the same URL with the same token: again on
        a new connection when the one the pool kept turns out dead (reset: the VIP moved to
        another controller, whose kernel knows nothing of it), or, for a GET or PATCH, when
        no answer came within QUICK_READ seconds (the second try waits the full timeout).
        Raises requests.RequestException."""
        quick = method in ("GET", "PATCH") and self.timeout > QUICK_READ
        for last in (False, True):
            wait = self.timeout if last or not quick else QUICK_READ
            try:
                return self.session.request(method, url + path, json=body, headers={"X-Auth-Token": token},
                                            timeout=(CONNECT_TIMEOUT, wait))
            except requests.ConnectionError as exc:
                if last or isinstance(exc, requests.Timeout) or not _reset(exc):
                    raise
                self._count("resets")
            except requests.Timeout:
                if last or wait >= self.timeout:
                    raise
                self._count("quick_retries")
        raise AssertionError("unreachable")

    def _request(self, method, path, body, ok):
        failed = None
        for attempt in (1, 2):
            url, token = self._current(failed)
            try:
                resp = self._send(url, token, method, path, body)
            except requests.RequestException as exc:
                if attempt == 1:
                    self._drop(url)  # this one stopped answering: the next token comes from another
                    failed = token
                    continue
                raise KeystoneError("unreachable", "{} {}{} failed: {}".format(method, url, path, type(exc).__name__)) from None
            if resp.status_code == 401 and attempt == 1:
                failed = token
                continue
            if resp.status_code in GATEWAY_FAILURES:
                if attempt == 1:
                    self._drop(url)  # nothing behind this proxy: the next token comes from another
                    failed = token
                    continue
                raise KeystoneError("unreachable", "{} {}{} answered HTTP {}: no Keystone behind it".format(
                    method, url, path, resp.status_code))
            if resp.status_code not in ok:
                raise KeystoneError("api", "{} {}{} answered HTTP {}: {}".format(method, url, path, resp.status_code, _message(resp)),
                                    status=resp.status_code)
            return resp.json() if resp.content else None
        raise KeystoneError("auth", "Keystone at {} keeps refusing a fresh token (401)".format(url))

    def _member(self, key, method, path, body=None, ok=(200,)):
        """``key`` of the JSON answer to :meth:`request`. Raises KeystoneError when the answer
        has none (something other than Keystone's API answered, or a truncated body)."""
        answer = self.request(method, path, body, ok)
        if not isinstance(answer, dict) or key not in answer:
            raise KeystoneError("api", "{} {} answered without {!r} (not Keystone's identity API?): {}".format(
                method, path, key, str(answer)[:120]))
        return answer[key]

    def regions(self):
        return self._member("regions", "GET", "/regions")

    def services(self):
        return self._member("services", "GET", "/services")

    def endpoints(self):
        return self._member("endpoints", "GET", "/endpoints")

    def create_region(self, region):
        return self._member("region", "POST", "/regions", {"region": {"id": region}}, ok=(201,))

    def create_service(self, name, stype):
        return self._member("service", "POST", "/services", {"service": {"name": name, "type": stype, "enabled": True}}, ok=(201,))

    def create_endpoint(self, service_id, interface, region, url):
        return self._member("endpoint", "POST", "/endpoints", {"endpoint": {
            "service_id": service_id, "interface": interface, "region_id": region, "url": url, "enabled": True}}, ok=(201,))

    def update_endpoint(self, endpoint_id, url):
        """Change an endpoint's URL in place (same id: clients caching it see the new URL)."""
        return self._member("endpoint", "PATCH", "/endpoints/" + endpoint_id, {"endpoint": {"url": url, "enabled": True}})

    def delete_endpoint(self, endpoint_id):
        self.request("DELETE", "/endpoints/" + endpoint_id, ok=(204,))


def _reset(exc):
    """True when ``exc`` (a requests.ConnectionError) is a connection the peer reset or closed
    under the request, not a refused or unroutable one (those are not worth the same URL again)."""
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return True
        if type(cause).__name__ in ("RemoteDisconnected", "ProtocolError") and "refused" not in str(cause).lower():
            return True
        cause = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else (cause.__cause__ or cause.__context__)
    return False


def _message(resp):
    """Keystone's own error message of a failed response, short."""
    try:
        return str((resp.json().get("error") or {}).get("message") or resp.text)[:200]
    except ValueError:
        return resp.text[:200]


def connect(urls, username, password, project="admin", user_domain="Default", project_domain="Default", timeout=5.0):
    """A :class:`Keystone` session (not yet authenticated); the loader-visible constructor."""
    return Keystone(urls, username, password, project, user_domain, project_domain, timeout)


def error_kind(exc):
    """``auth``, ``unreachable`` or ``api`` for a :class:`KeystoneError`, else None (Salt's
    loader gives each caller its own copy of this module, so ``isinstance`` is unreliable)."""
    return getattr(exc, "kind", None) if type(exc).__name__ == "KeystoneError" else None
