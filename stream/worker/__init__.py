"""The streaming worker: Kafka in, the detector core per batch, Redis state, alerts out.

``app`` is the Faust app and composition root; ``pipeline`` the batch step
(independent of Faust, unit-tested with fakes); ``state_cache`` the bounded
cache of session states, with the dirty ones written behind; ``health`` readiness and gauges.
"""
