"""The embedded MQTT broker for the zero-setup demo: amqtt on a loopback port, in a thread.

amqtt speaks MQTT 3.1.1 and carries about 1.5k QoS 1 messages/s here (design.md): enough for a
demo of two mines, not for production — production uses Mosquitto with deploy/mosquitto.conf.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

__all__ = ["EmbeddedBroker", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """amqtt broker bound to ``127.0.0.1:port``, anonymous, running on its own event loop thread.

    ``start()`` returns once the listener accepts connections; ``stop()`` once it is shut down.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt-broker",
                                        daemon=True)
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        # amqtt logs every connection at INFO: keep the demo's console for the alerts.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=15)

    async def _start(self) -> None:
        from amqtt.broker import Broker  # imported here: only the demo needs amqtt

        self._broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        })
        await self._broker.start()

    def stop(self) -> None:
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(timeout=15)
            self._broker = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
