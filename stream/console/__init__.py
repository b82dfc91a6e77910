"""``disengage console``: the marketing console's web server and its data sources."""
