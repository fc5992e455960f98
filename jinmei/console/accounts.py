"""Console accounts: password hashes, sessions with their CSRF token, and the login limiter.

**Passwords** are kept only as ``scrypt$n=16384,r=8,p=1$<salt>$<hash>`` (stdlib
:func:`hashlib.scrypt`, a 16-byte random salt per user, base64): the parameters travel in the
string, so stronger ones can be chosen later without breaking the hashes already written.
n=2**14, r=8, p=1 are the interactive-login parameters of RFC 7914 §2 / the OWASP password
storage cheat sheet (about 50 ms and 16 MiB per check here).

**Sessions** live in memory (a restart of ``jinmei run`` logs everyone out: the safe side):
a random 256-bit token in the cookie ``jinmei_session`` (``HttpOnly``, ``SameSite=Strict``,
``Path=/``, and ``Secure`` when the request came over TLS), and a per-session random CSRF token
that every form carries and every POST must return (compared in constant time). The login form
gets an anonymous session for its own token; a successful login replaces it with a new one
(no session fixation). A session ends after ``[console] session_max_s`` or at logout.

**Failed logins** are limited per account *at* a client address and per client address
(:class:`LoginLimiter`): after ``USER_FAILS`` failures of one account from one address, or
``ADDRESS_FAILS`` from one address, within ``FAIL_WINDOW_S``, further attempts from there are
refused without checking the password until the oldest failure leaves the window — the page
says so and for how long. Not per account from everywhere: whoever reaches the login page could
then lock a dispatcher out of the console during an incident with five wrong passwords; a
safety console keeps its users in, and a guesser is held to ``USER_FAILS`` an account per
address (every failure is logged with the address). The account is checked even
when the user is unknown (against a dummy hash), so timing does not tell names apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from config.model import ConsoleUser

__all__ = ["LoginLimiter", "Session", "Sessions", "authenticate", "hash_password",
           "verify_password"]

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # RFC 7914 §2 interactive parameters
USER_FAILS = 5  # jinmei's own, after OWASP's authentication cheat sheet (a handful per account)
ADDRESS_FAILS = 20  # jinmei's own: a control room shares one address; a guesser tries many names
FAIL_WINDOW_S = 900.0  # jinmei's own: 15 min, long enough to make guessing pointless
ANONYMOUS_S = 3600.0  # jinmei's own: a login form stays usable for an hour
MAX_ANONYMOUS = 10_000  # jinmei's own: open login forms kept; beyond, the oldest are dropped
MAX_FAIL_KEYS = 100_000  # jinmei's own: accounts and addresses with recent failures tracked


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The ``scrypt$…`` string of ``password`` with a new random salt (or ``salt``)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    return (f"scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}")


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` hashes to ``stored`` (with the parameters written in it)."""
    try:
        scheme, params, salt, digest = stored.split("$")
        values = dict(part.split("=") for part in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=n, r=r, p=p,
                               dklen=len(expected), maxmem=256 * n * r + 2**20)
    except (ValueError, KeyError):  # a malformed hash never matches (the loader checks them)
        return False
    return scheme == "scrypt" and hmac.compare_digest(found, expected)


_DUMMY_HASH = hash_password("", b"jinmei-dummy-salt")  # checked for unknown names


@dataclass
class Session:
    """One browser's login (``user`` None: the anonymous session of the login form)."""

    token: str
    csrf: str
    user: ConsoleUser | None
    expires: float

    def csrf_ok(self, given: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), given.encode())


class Sessions:
    """The live sessions by token; thread-safe (one HTTP thread a request)."""

    def __init__(self, max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_s, self.clock = max_s, clock
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self, user: ConsoleUser | None) -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user,
                          now + (self.max_s if user else ANONYMOUS_S))
        with self._lock:
            live = {t: s for t, s in self._by_token.items() if s.expires > now}
            anonymous = [t for t, s in live.items() if s.user is None]
            for token in anonymous[:max(0, len(anonymous) - MAX_ANONYMOUS + 1)]:
                del live[token]  # the oldest login forms first: a flood cannot fill memory
            live[session.token] = session
            self._by_token = live
        return session

    def get(self, token: str) -> Session | None:
        with self._lock:
            session = self._by_token.get(token)
        return session if session is not None and session.expires > self.clock() else None

    def end(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)


class LoginLimiter:
    """Failed logins in a sliding window, per account name at an address and per address."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._fails: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        fails = self._fails.setdefault(key, deque())
        while fails and fails[0] <= now - FAIL_WINDOW_S:
            fails.popleft()
        return fails

    def blocked_for(self, name: str, address: str) -> float:
        """Seconds until a login of ``name`` from ``address`` may be tried again (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [fails[0] + FAIL_WINDOW_S - now
                     for key, limit in ((("user", f"{name}\x1f{address}"), USER_FAILS),
                                        (("address", address), ADDRESS_FAILS))
                     if len(fails := self._recent(key, now)) >= limit]
        return max(waits, default=0.0)

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._fails) > MAX_FAIL_KEYS:  # forget what left the window
                self._fails = {k: f for k, f in self._fails.items()
                               if f and f[-1] > now - FAIL_WINDOW_S}
            for key in (("user", f"{name}\x1f{address}"), ("address", address)):
                self._recent(key, now).append(now)


def authenticate(users: dict[str, ConsoleUser], name: str, password: str) -> ConsoleUser | None:
    """The account when ``password`` is its password; an unknown name costs the same time."""
    user = users.get(name)
    ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
    return user if ok and user is not None else None
