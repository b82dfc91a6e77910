"""The sites a collector serves: write keys, allowed origins, rate limits.

``DISENGAGE_COLLECTOR_SITES`` is a JSON object of site id to :class:`Site`::

    {"shop": {"write_key": "wk_2b7f0c8e5d", "origins": ["https://shop.example"],
              "rate_per_s": 200, "webhook_secret": "..."}}

* The tracker and our contract send the write key as ``?k=`` (``sendBeacon``
  cannot set headers) or in ``X-Disengage-Key``; Segment and RudderStack send
  it as the user name of HTTP Basic; Segment's webhook signs its body with the
  site's ``webhook_secret`` instead; Snowplow trackers name the site in ``aid``.
* A browser's ``Origin`` must be one of the site's ``origins`` (``"*"``: any).
  Server-to-server calls send no ``Origin``.
* ``rate_per_s``: events per second accepted for the site (a token bucket
  holding ``burst_s`` seconds of it); 0, the default, is unlimited.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math

from pydantic import BaseModel, ConfigDict, Field


class Site(BaseModel):
    """One site's credentials and limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    write_key: str = Field(min_length=8, description="Secret of the site's calls.")
    origins: tuple[str, ...] = Field(
        default=(), description='Browser origins allowed, e.g. "https://shop.example"; "*": any.'
    )
    rate_per_s: float = Field(default=0.0, ge=0, description="Events per second; 0: no limit.")
    burst_s: float = Field(default=2.0, gt=0, description="Seconds of rate a burst may use.")
    webhook_secret: str = Field(
        default="", description="Shared secret of Segment's webhook signature (X-Signature)."
    )
    snowplow: bool = Field(
        default=False,
        description="Accept Snowplow tracker calls naming this site in `aid`. Off by default: "
        "the protocol carries no secret, so anyone who knows the site id can send them.",
    )
    interventions: bool = Field(
        default=True,
        description="Serve this site's pages their sessions' alerts (the intervention "
        "channel, <prefix>/s and <prefix>/p) and give the tracker a channel token.",
    )


class Sites:
    """Look-ups over the configured sites (constant-time key comparisons)."""

    def __init__(self, sites: dict[str, Site]) -> None:
        self.sites = dict(sites)

    def by_key(self, key: str) -> str | None:
        """The site whose write key is ``key``."""
        found = None
        for site_id, site in self.sites.items():
            if hmac.compare_digest(site.write_key.encode(), key.encode("utf-8", "surrogateescape")):
                found = site_id
        return found

    def by_basic(self, header: str) -> str | None:
        """The site of an ``Authorization: Basic`` header (write key as user name)."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            user = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, ValueError):  # not base64 (or not ASCII), not UTF-8
            return None
        return self.by_key(user) if user else None

    def origin_allowed(self, site_id: str, origin: str | None) -> bool:
        """Whether a call from ``origin`` (``None``: not from a browser) may use the site."""
        if origin is None:
            return True
        origins = self.sites[site_id].origins
        return "*" in origins or origin.rstrip("/") in {o.rstrip("/") for o in origins}

    def signed(self, site_id: str, body: bytes, signature: str) -> bool:
        """Segment's webhook signature: hex HMAC-SHA1 of the raw body with the site's secret."""
        secret = self.sites[site_id].webhook_secret
        if not secret or not signature:
            return False
        expected = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest().encode()
        given = signature.strip().lower().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(expected, given)


class RateLimiter:
    """A token bucket of events per site; ``take`` is called per request.

    >>> limiter = RateLimiter({"s": Site(write_key="k" * 8, rate_per_s=10, burst_s=1)})
    >>> limiter.take("s", 10, now=0.0), limiter.take("s", 1, now=0.0)
    (0.0, 0.1)
    >>> limiter.take("s", 30, now=0.5)  # 5 tokens earned: it passes, 25 in debt
    0.0
    >>> limiter.take("s", 1, now=1.0)  # 20 in debt after 5 more: 2.1 s to a token
    2.1
    """

    def __init__(self, sites: dict[str, Site]) -> None:
        self.rates = {
            s: (site.rate_per_s, site.rate_per_s * site.burst_s) for s, site in sites.items()
        }
        self.tokens = {s: cap for s, (_, cap) in self.rates.items()}
        self.at: dict[str, float] = {}

    def take(self, site_id: str, events: int, now: float) -> float:
        """Take ``events`` tokens; 0.0 when the request may pass, else the
        seconds to wait (and nothing is taken). A request passes while the
        bucket holds a token, and may take it into debt: one large request
        then holds back the next ones for as long as it would have waited."""
        rate, cap = self.rates[site_id]
        if rate <= 0:
            return 0.0
        last = self.at.get(site_id, now)
        tokens = min(cap, self.tokens[site_id] + (now - last) * rate)
        self.at[site_id] = now
        self.tokens[site_id] = tokens
        if tokens < 1.0:
            return math.ceil((1.0 - tokens) / rate * 10) / 10
        self.tokens[site_id] = tokens - events
        return 0.0
