"""Several engines behind one gateway: backends, balancing, health, fallback.

config.py     what a backend and a model's routing policy are (TOML shapes)
breaker.py    the circuit breaker of one backend
backend.py    a backend at run time: URL, key, models, outstanding requests
balance.py    the order in which backends are tried for one request
admission.py  the bounded queue of a model whose backends are all saturated
health.py     the active health checker (a lifespan task)
readiness.py  the /ready verdict over all backends
router.py     picking, failing over before the first byte, leases
stream.py     peeking the first upstream chunk; releasing a lease with a stream
metrics.py    per-backend figures for Prometheus, read when scraped
"""
