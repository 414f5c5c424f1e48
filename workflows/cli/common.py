"""What every ``urbanfusion`` command shares: the app, its consoles, one-line errors, signals.

Errors caused by input (:class:`~urbanfusion.pipeline.errors.UrbanFusionError`) print one line on
stderr and exit with status 2; there is never a traceback for bad input.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import ParamSpec, TypeVar, cast

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.text import Text

from urbanfusion.pipeline.errors import UrbanFusionError

app = typer.Typer(
    help="Urban function maps from satellite imagery fused with mobile-phone signalling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
model_app = typer.Typer(help="Inspect model files.", no_args_is_help=True)
app.add_typer(model_app, name="model")
# No markup: messages hold paths and install hints like `.[train]` that rich would eat as tags.
out = Console(markup=False)
err = Console(stderr=True, markup=False)


def flagged(label: str, style: str, message: str) -> Text:
    """``label`` in ``style``, then ``message`` as it is."""
    return Text.assemble((label, style), " ", message)


P = ParamSpec("P")
R = TypeVar("R")


class Terminated(KeyboardInterrupt):
    """SIGTERM (what systemd, cron's kill and container runtimes send), handled as Ctrl-C."""

    exit_code = 128 + signal.SIGTERM


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def how(e: KeyboardInterrupt) -> str:
    """How a command was stopped, in words."""
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"


def interrupted_line(e: KeyboardInterrupt) -> str:
    """What an interrupted command leaves behind, truly: published or not."""
    from urbanfusion.workflows.publish import published_here

    stopped = how(e)
    published = published_here()
    if published:
        run = published[-1]
        return f"{stopped} after run {run.name} was published in {run.parent.parent}; it is whole"
    return f"{stopped}; no output was published"


def interrupt_status(e: KeyboardInterrupt) -> int:
    """The exit status of a stopped command: 143 for SIGTERM, 130 for Ctrl-C."""
    return Terminated.exit_code if isinstance(e, Terminated) else 130


def one_line_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a command: bad input, a system error or a stop is one line and an exit status."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except UrbanFusionError as e:
            message = " ".join(str(e).split())
            err.print(flagged("error:", "bold red", message), soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:
            # Disk full, no permission, a path through a file: the system's words, one line.
            where = f": {e.filename}" if e.filename else ""
            if e.errno == errno.ENOSPC:
                message = (
                    f"disk full writing {e.filename or 'the outputs'}; free space on that file "
                    "system, or write to another (output.dir for a run)"
                )
            else:
                message = f"{e.strerror or e}{where}; check the path and free space"
            err.print(flagged("error:", "bold red", message), soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:
            err.print(interrupted_line(e), highlight=False, soft_wrap=True)
            raise typer.Exit(interrupt_status(e)) from None

    return wrapper


@contextlib.contextmanager
def needs_train_extra(what: str) -> Iterator[None]:
    """Wrap the imports of a command that needs torch: without it, a one-line install hint."""
    try:
        yield
    except ImportError as e:
        raise UrbanFusionError(
            f"{what} needs torch and onnx ({e.name} is missing); install them with "
            "`pip install torch==2.13.0` then `pip install -e .[train]`"
        ) from None


@contextlib.contextmanager
def rasterio_without_boto3() -> Iterator[None]:
    """Imports inside see no boto3: for a command on local files that imports rasterio first.

    rasterio imports boto3 whenever it is installed (for its own AWS sessions; the ``[s3]`` and
    dev extras install it): 0.14 s of the 0.8 s ``urbanfusion dehaze`` takes on a 2,048 px
    image. A None in ``sys.modules`` makes that import fail, which rasterio takes as boto3 being
    absent. Nothing changes where rasterio or boto3 is imported already, and the None is taken
    out after, so boto3 imports as usual later in the process.
    """
    if "rasterio" in sys.modules or "boto3" in sys.modules:
        yield
        return
    sys.modules["boto3"] = cast(ModuleType, None)  # "import boto3" raises ImportError
    try:
        yield
    finally:
        if sys.modules.get("boto3", ModuleType("boto3")) is None:
            del sys.modules["boto3"]


def print_per_class_f1(f1: dict[str, float]) -> None:
    """A line per class: its F1."""
    for name, value in f1.items():
        out.print(f"  F1 {name:<16} {value:.3f}", highlight=False)


def print_notes(notes: list[str]) -> None:
    """Notes on stderr, each flagged ``note:``."""
    for note in notes:
        err.print(flagged("note:", "yellow", note), soft_wrap=True)


def print_outputs(paths: dict[str, Path] | dict[str, str]) -> None:
    """A line per output: its name and path (or S3 URL)."""
    for name, path in paths.items():
        out.print(f"  {name:<18} {path}", highlight=False, soft_wrap=True)


NO_WAIT = typer.Option(
    "--no-wait",
    help="If another run is writing the same output folder, exit at once (status 75).",
)
FORCE = typer.Option("--force", help="Recompute even when nothing changed since the published run.")

SOURCES_HELP = (
    "Run configs of labelled cities (each with a --labels zones file), or URFC-layout folders "
    "(AreaID_CategoryID.jpg images and .txt visits, labelled by their names)."
)


Settings = TypeVar("Settings", bound=BaseModel)
# Settings that are no option of their own, in the options' words.
_PHRASES = {
    "set `network.use_image` and `network.use_activity`": "use --branches fusion",
    "set `use_image` and `use_activity`": "use --branches fusion",
}


def settings(model: type[Settings], **values: object) -> Settings:
    """``model`` from the options' values; what it refuses is one line in the options' words.

    The settings' messages name settings in backticks (`image_encoder`): here they are options.
    """
    try:
        return model.model_validate(values)
    except ValidationError as e:
        first = e.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        if first["loc"]:
            message = f"`{first['loc'][-1]}` {first['input']!r}: {message}"
        for phrase, words in _PHRASES.items():
            message = message.replace(phrase, words)
        message = re.sub(
            r"`(?:network\.)?([a-z_]+)`", lambda m: "--" + m.group(1).replace("_", "-"), message
        )
        raise UrbanFusionError(message) from None
