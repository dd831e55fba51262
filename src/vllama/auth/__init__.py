"""Who may call the gateway, how much, and what they used.

    keys.py       secrets (``vll-`` + 256 random bits), their sha256, key records
    store.py      the durable state: SQLite under home, or PostgreSQL by URL; migrations
    limits.py     per-principal request/token/concurrency limits; request ceilings
    usage.py      usage counted in memory, written in batches
    principal.py  the caller of one request, as the routes see it
    service.py    the above wired together; owned by the app's lifespan

Nothing here imports the server: the middleware and routes call in, never the
other way round. The hot path (``AuthService.verify`` and the limiters) does no
I/O: the key table is mirrored in memory and reloaded off the request path.
"""
