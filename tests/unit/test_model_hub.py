"""The progress bar huggingface_hub drives: counted right on both download paths."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter
from huggingface_hub.utils.tqdm import _get_progress_bar_context

from vllama.models.hub import bar_class


def test_http_path_reports_bytes_written_from_the_resume_point() -> None:
    seen: list[int] = []
    cls = bar_class(seen.append)
    context = _get_progress_bar_context(
        desc="f", log_level=logging.INFO, total=100, initial=40, tqdm_class=cls
    )
    with context as bar:
        bar.update(10)
        bar.update_transfer(10)  # type: ignore[attr-defined]
        bar.update(50)
    assert seen == [40, 50, 100]


def test_xet_path_keeps_one_bar_of_written_bytes() -> None:
    seen: list[int] = []
    reporter = XetDownloadProgressReporter(
        reconstruction_desc="f",
        total=100,
        log_level=logging.INFO,
        tqdm_class=bar_class(seen.append),
    )
    for done, transferred in ((30, 10), (100, 40)):
        report = SimpleNamespace(
            total_bytes=100,
            total_bytes_completed=done,
            total_bytes_completion_rate=1.0,
            total_transfer_bytes_completed=transferred,
            total_transfer_bytes_completion_rate=1.0,
        )
        reporter.update_progress(report)
    reporter.close()
    assert seen == [0, 30, 100]  # one bar, written bytes only
