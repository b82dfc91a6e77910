"""The real :class:`~stream.forward.delivery.Poster`: one aiohttp POST per call.

Redirects are not followed (a 3xx is a permanent answer), the first 512 bytes
of the answer are kept as its detail, and errors are results, never raised:
their text is scrubbed of the webhook URL's secret parts.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from stream.forward.delivery import PostResult
from stream.forward.webhook_url import scrub

USER_AGENT = "disengage-forwarder/1"
# bytes of an answer kept as the detail of a result (logs, dlq.detail)
_DETAIL_BYTES = 512


class WebhookPoster:
    """POSTs JSON to ``url`` with a ``timeout_s`` total per attempt.
    ``observe(seconds)`` receives each attempt's duration, measured on
    ``clock`` (monotonic seconds)."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        clock: Callable[[], float],
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.url = url
        self.clock = clock
        self.observe = observe
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"User-Agent": USER_AGENT},
        )

    async def post(self, body: bytes, idempotency_key: str) -> PostResult:
        started = self.clock()
        try:
            async with self.session.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
                allow_redirects=False,
            ) as resp:
                text = (await resp.content.read(_DETAIL_BYTES)).decode("utf-8", "replace")
                return PostResult(resp.status, resp.headers.get("Retry-After"), text.strip())
        except TimeoutError:
            return PostResult(None, None, "timed out", timed_out=True)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", self.url)
            return PostResult(None, None, detail)
        finally:
            if self.observe is not None:
                self.observe(self.clock() - started)

    async def close(self) -> None:
        await self.session.close()
