"""The engine's output: a log file for people, a ring buffer for error messages.

When the engine fails, the useful sentence ("out of memory", "port in use") is in
its last lines, not in an exit code. The supervisor feeds every line here;
``diagnose`` turns the common causes into advice a user can act on, and ``tail``
gives the evidence to quote beside it.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from typing import TextIO

DEFAULT_LINES = 200

#: (pattern, advice), most specific first; matched against the tail, newest line first.
_CAUSES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"out of memory|OutOfMemoryError|Cannot allocate memory|\bMemoryError\b"
            r"|std::bad_alloc|No available memory for the cache blocks"
            r"|larger than the available KV cache memory",
            re.IGNORECASE,
        ),
        "the engine ran out of memory: try a smaller model, a lower max_model_len or"
        " max_num_seqs, or (on CPU) a different cpu_kvcache_space_gib",
    ),
    (
        re.compile(r"address already in use|Errno 98|error while attempting to bind", re.I),
        "the engine's port is already in use: stop what holds it or set engine_port",
    ),
    (
        re.compile(r"error: unrecognized arguments|error: argument --"),
        "the engine rejected its command line: check engine_args and the engine settings",
    ),
    (
        re.compile(
            r"Repository Not Found|RepositoryNotFoundError|GatedRepoError"
            r"|Invalid repository ID or local directory"
            r"|is not a local folder and is not a valid model identifier"
            r"|does not appear to have a file named config\.json",
            re.IGNORECASE,
        ),
        "the engine could not find the model: check its name, or pull or import it first",
    ),
    (
        re.compile(r"(^|\) )(ModuleNotFoundError|ImportError): "),
        "the engine environment is incomplete: run `vllama engine install`",
    ),
]


class EngineLogs:
    """Append-only log file plus the last ``maxlen`` lines in memory.

    Writes are synchronous: a line to a local file costs microseconds, far less
    than handing it to a thread, and keeps the order of lines exact.
    """

    def __init__(self, path: Path | None = None, *, maxlen: int = DEFAULT_LINES) -> None:
        self.path = path
        self._lines: deque[str] = deque(maxlen=maxlen)
        self._file: TextIO | None = None

    def append(self, line: str) -> None:
        """Record one line of engine output (without its newline)."""
        self._lines.append(line)
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8", buffering=1)
        self._file.write(line + "\n")

    def mark(self, text: str) -> None:
        """A separator line of our own (engine start, exit), so a reader of the file
        can tell one run from the next."""
        self.append(f"--- vllama: {text} ---")

    def clear(self) -> None:
        """Forget the buffered lines (not the file): a new run gets a fresh tail."""
        self._lines.clear()

    def tail(self, n: int = 20) -> list[str]:
        """The last ``n`` lines, oldest first."""
        if n <= 0:
            return []
        return list(self._lines)[-n:]

    def diagnose(self) -> str | None:
        """Advice for the most recent recognised cause in the tail, or None."""
        for line in reversed(self._lines):
            for pattern, advice in _CAUSES:
                if pattern.search(line):
                    return advice
        return None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
