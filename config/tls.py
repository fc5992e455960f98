"""The TLS client context every jinmei connection starts from (MQTT, FTPS).

:func:`client_context` verifies the server's certificate against ``ca_file`` (empty: the
system's trusted CAs) and its host name, as ``ssl.create_default_context`` does, and its
sockets close themselves when the handshake fails: paho-mqtt and ftplib leave a socket open
behind a refused handshake, and a client that retries (the ingestor, the upload queue) would
leak one per attempt.
"""

from __future__ import annotations

import ssl

__all__ = ["client_context"]


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def client_context(ca_file: str = "") -> ssl.SSLContext:
    """A verifying client context (module docstring); raises OSError or ssl.SSLError when
    ``ca_file`` cannot be read or holds no certificate."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.sslsocket_class = _ClosingSSLSocket
    return context
