"""How hard a summary run may press a server: request spacing, waits, and which errors to retry.

Request starts are spaced by `requests_per_minute`. After a 429 or a 503 that carries
`Retry-After` (or OpenAI's `retry-after-ms`), no request starts before that time has passed;
other transient errors wait an exponential backoff with jitter.
"""

import asyncio
import random
import time
from email.utils import parsedate_to_datetime
from enum import Enum

MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 600.0


class Failure(Enum):
    FATAL = "fatal"  # a wrong key, a forbidden or unknown model: the run stops
    TRANSIENT = "transient"  # a 429, a 5xx, a timeout, a lost connection: asked again later
    REJECTED = "rejected"  # the server refused this request (e.g. too long): the question fails


def failure_kind(err: Exception, litellm) -> Failure | None:
    """What an error of a completion call means; None for one that is not the server's answer
    (a bug, to be raised)."""
    if isinstance(
        err, (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError)
    ):
        return Failure.FATAL
    if isinstance(err, (litellm.Timeout, litellm.APIConnectionError, litellm.RateLimitError)):
        return Failure.TRANSIENT
    status = getattr(err, "status_code", None)
    if not isinstance(status, int):
        return None
    return Failure.TRANSIENT if status in (408, 409, 429) or status >= 500 else Failure.REJECTED


def _headers(err: Exception) -> dict:
    headers = {}
    response = getattr(err, "response", None)
    for source in (
        getattr(response, "headers", None),
        getattr(err, "litellm_response_headers", None),
    ):
        if source:
            headers |= {str(k).casefold(): v for k, v in dict(source).items()}
    return headers


def retry_after(err: Exception) -> float | None:
    """Seconds a 429 or 503 asks to wait before the next request, if it says."""
    if getattr(err, "status_code", None) not in (429, 503):
        return None
    headers = _headers(err)
    try:
        if "retry-after-ms" in headers:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(headers["retry-after-ms"]) / 1000))
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


class RateLimiter:
    """Spaces request starts evenly, at most `per_minute` a minute (no limit when None), and
    holds every start while a server's Retry-After runs."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0

    def hold(self, seconds: float) -> None:
        self._next = max(self._next, time.monotonic() + seconds)

    async def wait(self) -> None:
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class Backoff:
    """Exponential backoff with jitter: about base_s * 2^(attempt-1), between 50 and 150%."""

    def __init__(self, base_s: float):
        self.base_s = base_s
        self._random = random.Random(0)

    def delay(self, attempt: int) -> float:
        delay = min(MAX_BACKOFF_S, self.base_s * 2 ** (attempt - 1))
        return delay * self._random.uniform(0.5, 1.5)
