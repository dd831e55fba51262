"""Console logging: access lines as plain text beside rich, in order, nothing lost at close."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from vllama.cli.logs import ACCESS_LOGGER, BatchWriter, setup_logging


def record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 0, message, None, None)


def test_rich_mode_writes_access_lines_plain_and_the_rest_through_rich() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    writer = setup_logging("rich", "info", console)
    try:
        logging.getLogger("vllama.serve").info("engine is ready")
        logging.getLogger(ACCESS_LOGGER).info('abc "POST /v1/chat/completions" 200 0.6ms')
        logging.getLogger("vllama.serve").warning("backend down")
    finally:
        writer.close()
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "engine is ready" in lines[0]
    assert lines[1].endswith(' INFO     abc "POST /v1/chat/completions" 200 0.6ms')
    assert lines[1].startswith("[")
    assert "WARNING" in lines[2]
    assert "backend down" in lines[2]


def test_runs_bound_for_one_stream_go_out_in_one_write() -> None:
    class Counting(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

    stream = Counting()
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter("%(name)s %(message)s"))
    writer = BatchWriter(target, interval=60)  # drained only by close()
    for n in range(5):
        writer.handle(record("vllama.access", f"request {n}"))
    writer.close()
    assert stream.getvalue().splitlines() == [f"vllama.access request {n}" for n in range(5)]
    assert stream.writes == 1
