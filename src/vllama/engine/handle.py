"""What the gateway needs of an engine, whoever runs it.

A managed engine (``Supervisor``) and an attached one (``AttachedEngine``)
look the same to the routes: a base URL, the key it expects, and whether it is
ready now (and if not, how long a caller should wait before trying again).
"""

from __future__ import annotations

from typing import Protocol


class EngineHandle(Protocol):
    @property
    def base_url(self) -> str: ...

    @property
    def api_key(self) -> str | None: ...

    @property
    def state(self) -> str: ...

    @property
    def is_ready(self) -> bool: ...

    def retry_after(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class AttachedEngine:
    """An engine someone else runs: nothing to start or stop, always routable.

    Its failures surface per request as 502/504 in the caller's dialect.
    """

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def api_key(self) -> str | None:
        return self._api_key

    @property
    def state(self) -> str:
        return "attached"

    @property
    def is_ready(self) -> bool:
        return True

    def retry_after(self) -> int:
        return 1

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
