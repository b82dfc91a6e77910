"""Alert delivery to a webhook: ``disengage alerts forward --webhook URL``.

Reads the alerts topic with a consumer group of its own and POSTs each alert to
a webhook (Slack or JSON) for marketing ops, at least once: filtered, rate
limited into digests, retried with backoff, de-duplicated on the alert id, and
committed only once handled. The README's "Alert delivery for marketing ops"
says what users see; each module's docstring says how its part works:

``options`` (the only source of defaults), ``command`` (the CLI), ``app`` (the
composition root), ``loop``, ``parsing``, ``filters``, ``payloads``,
``ratelimit``, ``delivery``, ``webhook_url``, ``http_poster``,
``dead_letters``, ``offsets`` and ``dedupe``.
"""
