"""Loading a model: how a load reports its progress, and the libraries kept quiet meanwhile.

A loader (``make_sampler``, ``load_embedded``, ``load_gguf``) takes ``progress``, a callable that
gets a ``LoadStatus`` now and then; the front end shows it (the cell's progress bar, the sidebar,
a line on the terminal). Library code never prints a load's progress itself. ``progress`` may
raise (``LoadStopped`` when the user pressed Stop): the load ends there, and what it left half-made
is not kept.

``quiet_libraries`` keeps the third-party libraries' warnings (transformers' deprecations, tqdm's
"IProgress not found"), log lines and progress bars out of the cell, the terminal and the trace,
but only those raised on the threads that load and run the model: the notebook's own code runs
on the main thread, and its warnings stay as they are.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

STAGES = ("converting", "loading")


@dataclass(frozen=True)
class LoadStatus:
    """Where a load stands: ``stage`` (``converting`` the first time, then ``loading``), a line
    for people, and the ``fraction`` done of that stage (None: not known)."""

    stage: str
    message: str
    fraction: float | None = None

    def line(self) -> str:
        """``message`` with the fraction as a percentage: what a text front end shows."""
        if self.fraction is None:
            return self.message
        return f"{self.message} {round(100 * min(max(self.fraction, 0.0), 1.0))}%"


Progress = Callable[[LoadStatus], None]


class LoadStopped(KeyboardInterrupt):
    """Raised by a ``progress`` callback to stop the load (the user pressed Stop)."""


def report(progress: Progress | None, stage: str, message: str, fraction: float | None) -> None:
    """Call ``progress``, if there is one."""
    if progress is not None:
        progress(LoadStatus(stage, message, fraction))


def counting(
    progress: Progress | None, stage: str, message: str, start: float, end: float
) -> Callable[..., Any]:
    """A stand-in for ``tqdm(iterable, …)`` that reports the share of ``iterable`` done, mapped
    onto ``start``…``end`` of ``stage``, instead of drawing a bar (for library loops that take
    a ``tqdm``)."""

    def iterate(iterable: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        items = list(iterable)
        for i, item in enumerate(items):
            report(progress, stage, message, start + (end - start) * i / max(len(items), 1))
            yield item

    return iterate


# -- the libraries kept quiet ----------------------------------------------------------------

# Third-party packages whose warnings and log lines on the model's threads are noise to the user.
LIBRARIES = (
    "transformers",
    "torch",
    "tqdm",
    "huggingface_hub",
    "accelerate",
    "safetensors",
    "gguf",
    "peft",
    "tokenizers",
)
_LIBRARY_FILE = re.compile(r"[/\\](?:" + "|".join(LIBRARIES) + r")[/\\]")
_LOGGERS = ("transformers", "huggingface_hub")


def from_library(filename: str) -> bool:
    """True for a source file of one of the ``LIBRARIES``."""
    return bool(_LIBRARY_FILE.search(filename))


class QuietLibraries:
    """What ``quiet_libraries`` yields: which threads are the model's, and what it changed."""

    def __init__(self, all_threads: bool) -> None:
        self.all_threads = all_threads
        self.main = threading.main_thread().ident
        self._handlers: list[logging.Handler] = []

    def ours(self, thread: int | None) -> bool:
        return self.all_threads or thread != self.main

    def showwarning(self, shown: Callable[..., Any]) -> Callable[..., Any]:
        def showwarning(message: Any, category: Any, filename: str, *args: Any, **kw: Any) -> Any:
            if from_library(filename) and self.ours(threading.get_ident()):
                return None
            return shown(message, category, filename, *args, **kw)

        return showwarning

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not self.ours(record.thread)

    def cover(self) -> None:
        """Quiet the library loggers set up since (a library imported during a load adds its
        handler then): a loader calls this as it reports progress."""
        for handler in _library_handlers():
            if handler not in self._handlers:
                handler.addFilter(self.filter)
                self._handlers.append(handler)

    def uncover(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self.filter)
        self._handlers = []


@contextlib.contextmanager
def quiet_libraries(*, all_threads: bool = False) -> Iterator[QuietLibraries]:
    """Drop the warnings and the below-error log lines of ``LIBRARIES`` for the block, those of
    threads other than the main thread (``all_threads``: of every thread, for a process that runs
    no user code, such as the CLI). Not a ``catch_warnings``: that swaps the whole filter list,
    which other threads share, and the notebook's own code keeps its warnings here.
    """
    quiet = QuietLibraries(all_threads)
    shown = warnings.showwarning
    hook = quiet.showwarning(shown)
    warnings.showwarning = hook
    quiet.cover()
    try:
        yield quiet
    finally:
        if warnings.showwarning is hook:  # the user's code may have set its own meanwhile
            warnings.showwarning = shown
        quiet.uncover()


def _library_handlers() -> list[logging.Handler]:
    """The handlers of the libraries' own loggers (set up as their packages are imported)."""
    return [handler for name in _LOGGERS for handler in logging.getLogger(name).handlers]


@contextlib.contextmanager
def progress_bars_off() -> Iterator[None]:
    """No transformers or huggingface_hub progress bars in the block (a load reports through
    ``progress`` instead); the previous settings come back after."""
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(ImportError):
            from transformers.utils import logging as hf_logging

            if hf_logging.is_progress_bar_enabled():
                hf_logging.disable_progress_bar()
                stack.callback(hf_logging.enable_progress_bar)
        with contextlib.suppress(ImportError):
            from huggingface_hub.utils import (
                are_progress_bars_disabled,
                disable_progress_bars,
                enable_progress_bars,
            )

            if not are_progress_bars_disabled():
                disable_progress_bars()
                stack.callback(enable_progress_bars)
        yield


__all__ = [
    "LIBRARIES",
    "STAGES",
    "LoadStatus",
    "LoadStopped",
    "Progress",
    "QuietLibraries",
    "counting",
    "from_library",
    "progress_bars_off",
    "quiet_libraries",
    "report",
]
