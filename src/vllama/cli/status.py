"""Exit codes of every command, in one place."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1
    BAD_CONFIG = 2
    ENGINE_FAILED = 3
