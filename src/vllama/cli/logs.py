"""Console logging: rich for people, one JSON object per line for machines."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

import orjson
from rich.console import Console
from rich.logging import RichHandler

#: The logger of one line per request (server/middleware/request_id.py).
ACCESS_LOGGER = "vllama.access"
#: rich's own columns (time, level, message), as plain text.
ACCESS_FORMAT = "%(asctime)s %(levelname)-8s %(message)s"
ACCESS_DATE = "[%x %X]"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "status", "state"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class BatchWriter(logging.Handler):
    """Hands records to a writer thread in batches.

    ``emit`` runs on the event loop and only appends to a deque: no lock, no
    formatting, no wake-up of another thread. (A ``QueueHandler`` formats and
    copies every record on the loop and wakes its listener once per record;
    at a thousand requests a second that hand-off was the largest cost of an
    access-log line.) The thread drains the deque every ``interval`` seconds
    and formats and writes there, so terminal I/O and rich never block the
    loop. ``close`` drains what is left, so nothing is lost at exit.
    """

    def __init__(
        self,
        target: logging.Handler,
        interval: float = 0.05,
        *,
        lines: dict[str, logging.StreamHandler[Any]] | None = None,
    ) -> None:
        super().__init__()
        self.target = target
        #: Loggers whose records skip ``target`` for a plain stream handler.
        self.lines = lines or {}
        self.interval = interval
        self._records: collections.deque[logging.LogRecord] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllama-log-writer", daemon=True)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        # No filters and no lock here: the deque's append is atomic.
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)

    def _drain(self) -> None:
        batch = []
        while self._records:
            batch.append(self._records.popleft())
        # Runs of records bound for the same stream go out in one write, rather
        # than a write and a flush per line.
        pending: list[str] = []
        stream: logging.StreamHandler[Any] | None = None
        for record in batch:
            handler = self.lines.get(record.name, self.target)
            if isinstance(handler, logging.StreamHandler):
                if stream is not None and handler.stream is not stream.stream:
                    _write(stream, pending)
                stream = handler
                pending.append(handler.format(record) + handler.terminator)
            else:
                _write(stream, pending)
                handler.handle(record)
        _write(stream, pending)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._drain()
        self._drain()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.target.close()
        for handler in self.lines.values():
            handler.close()
        super().close()


def _write(stream: logging.StreamHandler[Any] | None, pending: list[str]) -> None:
    if stream is not None and pending:
        stream.stream.write("".join(pending))
        stream.flush()
        pending.clear()


def setup_logging(fmt: str, level: str, console: Console) -> BatchWriter:
    """Send every record to a :class:`BatchWriter` whose target formats it:
    rich for people, JSON lines for machines. The caller closes the returned
    writer at exit, which flushes what is pending."""
    handler: logging.Handler
    lines: dict[str, logging.StreamHandler[Any]] = {}
    if fmt == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
        # rich lays out every record as a table row (~0.6 ms of CPU, under the
        # GIL the event loop needs): at a thousand requests a second that was
        # more than the requests themselves. Access lines are plain text in the
        # same columns.
        access = logging.StreamHandler(console.file)
        access.setFormatter(logging.Formatter(ACCESS_FORMAT, datefmt=ACCESS_DATE))
        lines[ACCESS_LOGGER] = access
    writer = BatchWriter(handler, lines=lines)
    # Nothing here prints threads or processes; skipping them makes every record cheaper.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [writer]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    return writer
