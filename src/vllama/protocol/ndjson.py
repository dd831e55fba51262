"""NDJSON framing for Ollama streams.

Ollama streams are one JSON object per line, each ended by ``\\n``, with no
``data:`` prefix and no blank lines (ollama-python calls ``json.loads`` on
every line). Kept apart so every writer frames lines the same way.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps_line(obj: Any) -> bytes:
    """Serialise ``obj`` as one compact JSON line terminated by ``\\n``."""
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
