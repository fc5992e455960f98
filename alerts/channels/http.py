"""One HTTP POST with jinmei's failure mapping, shared by the webhook and SMS channels.

Connection errors and timeouts are retryable; an answer is success for 2xx, retryable for 5xx,
408 and 429, and a refusal for any other status (see ``base.http_status_retryable``).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

from alerts.channels.base import http_status_retryable
from config.errors import DeliveryError
from config.redact import redact_url

__all__ = ["post"]


def post(target: str, url: str, body: bytes, headers: Mapping[str, str],
         timeout_s: float) -> int:
    """POST ``body``; returns the 2xx status or raises DeliveryError naming ``target``."""
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        exc.close()  # the refusal's response holds the connection's socket open until closed
        raise DeliveryError(target, f"HTTP {exc.code} from {redact_url(url)}",
                            retryable=http_status_retryable(exc.code)) from exc
    except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
        raise DeliveryError(target, f"cannot reach {redact_url(url)}: {exc}",
                            retryable=True) from exc
