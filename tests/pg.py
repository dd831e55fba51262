"""A private PostgreSQL schema per test, in the database scripts/postgres made.

``VLLAMA_TEST_DATABASE_URL`` names it (``.ci/run`` and ``scripts/check`` export
it). Without it the PostgreSQL tests skip, except under ``CI=true``, where they
fail: CI must run them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest


def database_url() -> str:
    url = os.environ.get("VLLAMA_TEST_DATABASE_URL")
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail("VLLAMA_TEST_DATABASE_URL is not set: CI must run the PostgreSQL tests")
    pytest.skip("no PostgreSQL (set VLLAMA_TEST_DATABASE_URL, see scripts/postgres)")


async def private_schema() -> AsyncIterator[str]:
    """Yield a URL whose connections use a fresh schema; drop it afterwards."""
    url = database_url()
    schema = "t_" + secrets.token_hex(6)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        # asyncpg passes unknown query parameters on as server settings.
        yield f"{url}{'&' if '?' in url else '?'}search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
