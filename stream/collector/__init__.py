"""``disengage collect``: the HTTP collector that puts sites' events on the input topic."""
