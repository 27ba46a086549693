"""How a model's load reports progress and stops (kernel_bridge.loading), and which warnings
``quiet_libraries`` keeps out: the libraries' on the model's threads, never the notebook's own."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from kernel_bridge.loading import LoadStatus, LoadStopped, quiet_libraries
from kernel_bridge.samplers import make_sampler

SCRIPTS = Path(__file__).parent / "scripts"
LIBRARY_FILE = "/venv/lib/python3.11/site-packages/transformers/modeling_utils.py"


def warn_from(filename: str, text: str) -> None:
    warnings.warn_explicit(text, FutureWarning, filename, 1)


def on_a_thread(function: Any, *args: Any) -> None:
    thread = threading.Thread(target=function, args=args)
    thread.start()
    thread.join()


@pytest.fixture
def shown(monkeypatch) -> list[str]:
    """The warnings that reach the screen (IPython shows them through warnings.showwarning)."""
    seen: list[str] = []
    monkeypatch.setattr(
        warnings, "showwarning", lambda message, *args, **kw: seen.append(str(message))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        yield seen


def test_a_librarys_warning_on_the_models_thread_is_dropped(shown):
    with quiet_libraries():
        on_a_thread(warn_from, LIBRARY_FILE, "deprecated inside the load")
    assert shown == []


def test_the_notebooks_own_warnings_stay_even_from_the_libraries(shown):
    with quiet_libraries():
        warn_from(LIBRARY_FILE, "the notebook's code called a deprecated API")  # main thread
        on_a_thread(warn_from, "/home/me/analysis.py", "a thread of the notebook's own")
        warnings.warn("the notebook's own", stacklevel=1)
    assert shown == [
        "the notebook's code called a deprecated API",
        "a thread of the notebook's own",
        "the notebook's own",
    ]


def test_the_cli_drops_the_libraries_warnings_on_every_thread_and_restores_the_hook(shown):
    before = warnings.showwarning
    with quiet_libraries(all_threads=True):
        warn_from(LIBRARY_FILE, "deprecated")
    assert shown == [] and warnings.showwarning is before


def test_a_librarys_log_lines_below_error_on_the_models_thread_are_dropped():
    logger = logging.getLogger("transformers")
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        with quiet_libraries() as quiet:
            quiet.cover()
            on_a_thread(logger.warning, "`past_key_values` is deprecated")
            on_a_thread(logger.error, "the model could not load")
            logger.warning("the notebook's own use of transformers")
        on_a_thread(logger.warning, "after the run")
    finally:
        logger.removeHandler(handler)
    assert lines == [
        "the model could not load",
        "the notebook's own use of transformers",
        "after the run",
    ]


def test_a_slow_stand_in_reports_its_load_in_order():
    statuses: list[LoadStatus] = []
    sampler = make_sampler(f"scripted:{SCRIPTS / 'magic_slow_load.txt'}", progress=statuses.append)
    fractions = [s.fraction for s in statuses]
    assert fractions[0] == 0 and fractions[-1] == 1 and fractions == sorted(fractions)
    assert {s.stage for s in statuses} == {"loading"}
    assert statuses[-1].line().endswith("(a stand-in)… 100%")
    assert not sampler.model_text.startswith("=== load:")


def test_a_load_stops_at_its_next_progress_report():
    def stop_soon(status: LoadStatus) -> None:
        if status.fraction and status.fraction > 0.1:
            raise LoadStopped("Stop pressed")

    t0 = time.monotonic()
    with pytest.raises(LoadStopped):
        make_sampler(f"scripted:{SCRIPTS / 'magic_slow_load.txt'}", progress=stop_soon)
    assert time.monotonic() - t0 < 1.5  # not the whole 4 s
