"""The last sign of life of a run of ``jinmei run``, kept so that the next run can tell whether
the previous one ended without saying so.

A run that stops cleanly, or that fails and reports it (``monitoring_offline``, exit 3:
:meth:`jinmei.service.Service.fail`), removes ``<state_dir>/last-sign.json``. A run that ends
any other way — ``kill -9``, a crash of the interpreter, the out-of-memory killer, a power
loss of the host, a freeze ended by an operator's kill — leaves it behind, holding the epoch
ms of its last sign of life (rewritten every second by the supervisor's watch). The next
``jinmei run`` finds it and raises ``monitoring_offline`` (condition ``worker_dead``) from
that time, resolved once it is online: the receivers hear of every gap in the watching, even
one nobody could report while it lasted (the broker's Last Will told only MQTT subscribers).

Why a file rewritten each second and not a lock or a pid: a pid says nothing after a reboot,
and a lock says nothing of *when* the watching stopped. The first write of a run is flushed to
disk (file and folder); the later ones are not (one small write a second, no fsync): after a
power loss the time read back may be up to a few seconds early, never later than the truth.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

__all__ = ["LastSign"]

log = logging.getLogger(__name__)

FILE_NAME = "last-sign.json"


class LastSign:
    """``<state_dir>/last-sign.json``: see the module docstring."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self._failing = False

    def left_over(self) -> int | None:
        """The last sign of life (epoch ms) of a previous run that ended without saying so, or
        None. An unreadable file (a power loss mid-write) counts by its modification time."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read %s (%s): the previous run's end is unknown", self.path, exc)
            return None
        try:
            return int(json.loads(text)["at_ms"])
        except (ValueError, KeyError, TypeError):
            return int(self.path.stat().st_mtime * 1000)

    def beat(self, now_ms: int, *, durable: bool = False) -> None:
        """Say this run is alive at ``now_ms`` (``durable``: flushed to disk, the run's first)."""
        tmp = self.path.with_name(FILE_NAME + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                f.write(json.dumps({"at_ms": now_ms, "pid": os.getpid()}))
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.path)
            if durable:
                folder = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except OSError as exc:  # a full disk must not stop the watching; said once
            if not self._failing:
                log.error("cannot write %s (%s): a crash of this run would go unreported "
                          "at the next start", self.path, exc)
            self._failing = True
            return
        self._failing = False

    def clear(self) -> None:
        """This run ends having said so (a clean stop, or a failure it reported)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot remove %s (%s): the next start will report a gap that was "
                      "reported already", self.path, exc)
