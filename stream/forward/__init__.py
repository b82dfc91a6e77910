"""Alert delivery to a webhook (being split into modules; see issue 8)."""

from stream.forward._monolith import *  # noqa: F403  (interim, while the package is split)
from stream.forward._monolith import (  # noqa: F401
    AlertFilter,
    Backoff,
    ForwardOptions,
    metrics_server,
    parse_rate_limit,
    redact_url,
    run_forwarder,
)
