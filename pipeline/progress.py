"""Progress of the stages: a rich status line on a terminal, silence elsewhere; timings always."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape


class StageTimer:
    """Times named stages; shows each one while it runs when stderr is a terminal."""

    def __init__(self, console: Console | None = None, quiet: bool | None = None) -> None:
        """Show progress on ``console`` (stderr by default) unless ``quiet`` or not a terminal."""
        self.console = console or Console(stderr=True, log_path=False)
        self.show = self.console.is_terminal if quiet is None else not quiet
        self.quiet = bool(quiet)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        """Time ``name`` and, on a terminal, show ``what`` with a spinner until it finishes."""
        start = time.perf_counter()
        status = (
            self.console.status(f"[bold]{escape(name)}[/]: {escape(what)}") if self.show else None
        )
        with status if status is not None else contextlib.nullcontext():
            yield
        self.timings[name] = round(time.perf_counter() - start, 3)
        if self.show:
            self.console.log(f"{name}: {what} ({self.timings[name]:.1f} s)")

    def note(self, text: str) -> None:
        """Say something the user should know while a stage runs (also in logs), unless quiet."""
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        """A warning line on stderr, even when quiet: something the user must look at."""
        self.console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)
