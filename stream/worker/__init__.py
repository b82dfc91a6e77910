"""The streaming worker: Kafka in, the detector core per batch, Redis state, alerts out.

``app`` is the Faust app and composition root; ``pipeline`` the batch step
(independent of Faust, unit-tested with fakes); ``state_cache`` the bounded
write-through cache of session states; ``health`` readiness and gauges.
"""
