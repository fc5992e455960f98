"""Upload targets: SFTP (asyncssh), FTPS and FTP (stdlib ftplib), and the drain loop.

``networking.url`` is ``sftp://user@host[:port]/dir``, ``ftps://user@host[:port]/dir`` (FTP
with explicit TLS, ``AUTH TLS``: the login, the commands and every file encrypted —
``PROT P`` — and the server's certificate verified against ``ca_file``, or the system's CAs)
or, only when ``[networking] insecure = true``, plain ``ftp://…`` (password and files in clear
text: the service warns at start); the password comes from the environment (``password_env``,
default ``JINMEI_NETWORKING_PASSWORD``).
A file goes up as ``<name>.part`` and is then renamed, so the regulator's platform never reads
half a file. Before uploading, a target looks for ``<name>`` already there with the same size:
an upload whose confirmation was lost (jinmei stopped between the rename and recording it) is
confirmed, not sent twice. SFTP verifies the server's host key against ``known_hosts`` (a file
in OpenSSH format; empty: asyncssh's default, ``~/.ssh/known_hosts``, and no key trusted when
that file is absent) — never any key. Every failure is a retryable
:class:`~config.errors.DeliveryError`: the file stays queued. An unverified host key too, since
the fix is outside jinmei (the regulator's new key added to known_hosts, or a spoofed server
gone): it is logged as an error at every attempt, loud, not only as a failed upload.
"""

from __future__ import annotations

import asyncio
import ftplib
import logging
import posixpath
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import asyncssh

from config.errors import DeliveryError
from config.redact import redact_url
from config.tls import client_context
from networking.queue import UploadQueue

__all__ = ["FtpTarget", "SftpTarget", "Target", "drain", "open_target"]

log = logging.getLogger(__name__)
TIMEOUT_S = 20.0


class Target(Protocol):
    name: str

    def upload(self, path: Path) -> str:
        """Put the file there under its own name; returns what happened ("uploaded", or
        "already there"); raises DeliveryError."""
        ...


@dataclass(frozen=True)
class _Where:
    host: str
    port: int
    user: str
    directory: str


def _where(url: str, default_port: int) -> _Where:
    parts = urlsplit(url)
    return _Where(parts.hostname or "", parts.port or default_port, unquote(parts.username or ""),
                  parts.path or "/")


class FtpTarget:
    """FTP, over explicit TLS when ``tls`` is given (a context verifying the server)."""

    def __init__(self, url: str, password: str, tls: ssl.SSLContext | None = None) -> None:
        self.name, self._where, self._password = redact_url(url), _where(url, 21), password
        self._tls = tls

    def _session(self) -> ftplib.FTP:
        if self._tls is None:
            return ftplib.FTP(timeout=TIMEOUT_S)
        return ftplib.FTP_TLS(context=self._tls, timeout=TIMEOUT_S)

    def upload(self, path: Path) -> str:
        w = self._where
        try:
            with self._session() as ftp:
                ftp.connect(w.host, w.port)
                ftp.login(w.user or "anonymous", self._password)  # FTP_TLS: AUTH TLS first
                if isinstance(ftp, ftplib.FTP_TLS):
                    ftp.prot_p()  # the data connections (the files) encrypted too
                ftp.cwd(w.directory)
                size = path.stat().st_size
                ftp.voidcmd("TYPE I")  # SIZE is refused in ASCII mode
                try:
                    if ftp.size(path.name) == size:
                        return "already there"
                except ftplib.error_perm:
                    pass  # 550: not there yet
                with open(path, "rb") as data:
                    ftp.storbinary(f"STOR {path.name}.part", data)
                ftp.rename(f"{path.name}.part", path.name)
        except ssl.SSLCertVerificationError as exc:
            log.error("networking: the certificate of %s is not trusted (networking.ca_file): "
                      "%s — nothing is uploaded until it is", self.name, exc.verify_message)
            raise DeliveryError(self.name, f"{path.name}: certificate not trusted: {exc}",
                                retryable=True) from exc
        except (OSError, EOFError, ftplib.Error) as exc:
            raise DeliveryError(self.name, f"{path.name}: {exc}", retryable=True) from exc
        return "uploaded"


class SftpTarget:
    def __init__(self, url: str, password: str, known_hosts: str = "") -> None:
        self.name, self._where, self._password = redact_url(url), _where(url, 22), password
        self._known_hosts = known_hosts

    def upload(self, path: Path) -> str:
        try:
            return asyncio.run(asyncio.wait_for(self._upload(path), TIMEOUT_S))
        except asyncssh.HostKeyNotVerifiable as exc:
            where = self._known_hosts or "~/.ssh/known_hosts"
            log.error("networking: the host key of %s is not in %s — nothing is uploaded until"
                      " it is (a changed key of the regulator, or not the regulator's server)",
                      self.name, where)
            raise DeliveryError(self.name, f"{path.name}: host key not verified against"
                                f" {where}: {exc}", retryable=True) from exc
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise DeliveryError(self.name, f"{path.name}: {exc}", retryable=True) from exc

    async def _upload(self, path: Path) -> str:
        w = self._where
        async with asyncssh.connect(w.host, w.port, username=w.user, password=self._password,
                                    known_hosts=self._known_hosts or (),
                                    client_keys=None) as ssh, \
                ssh.start_sftp_client() as sftp:
            final = posixpath.join(w.directory, path.name)
            if await sftp.exists(final) and (await sftp.stat(final)).size == path.stat().st_size:
                return "already there"
            await sftp.put(str(path), final + ".part")
            await sftp.posix_rename(final + ".part", final)
            return "uploaded"


def open_target(url: str, password: str, known_hosts: str = "", ca_file: str = "") -> Target:
    """The target of ``url``; ``known_hosts`` is for SFTP, ``ca_file`` for FTPS (see the
    module docstring). Plain ``ftp://`` is logged as a warning: the loader allows it only with
    ``insecure = true``."""
    if url.startswith("sftp:"):
        return SftpTarget(url, password, known_hosts)
    if url.startswith("ftps:"):
        return FtpTarget(url, password, client_context(ca_file))
    log.warning("networking: %s is plain FTP — the password and every file cross the network "
                "unencrypted ([networking] insecure = true); use sftp:// or ftps://",
                redact_url(url))
    return FtpTarget(url, password)


def drain(queue: UploadQueue, target: Target, now: float,
          beat: Callable[[], None] = lambda: None) -> int:
    """Try every due file once, oldest first; stop at the first failure (the server is
    probably down: the rest waits for the backoff). Returns how many were confirmed.
    ``beat`` is called before each upload (the caller's heartbeat)."""
    done = 0
    for item in queue.due(now):
        beat()
        try:
            outcome = target.upload(item.path)
        except DeliveryError as exc:
            queue.failed(item.name, now, str(exc))
            log.warning("networking upload failed (attempt %d): %s", item.attempts + 1, exc)
            break
        queue.confirmed(item.name, now, outcome)
        done += 1
    return done
