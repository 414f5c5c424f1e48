"""The ``urbanfusion`` command line: parses arguments, calls one function, prints the result.

Errors caused by input (:class:`~urbanfusion.pipeline.errors.UrbanFusionError`) print one line on
stderr and exit with status 2; there is never a traceback for bad input. The commands live in
:mod:`.city_commands`, :mod:`.model_commands` and :mod:`.scene_commands`; importing one adds its
commands to :data:`app`. :func:`main` imports only the module of the command it is given (every
module for help or an unknown name): the model commands build their options from the training
settings, 0.05 s of every start, which an up-to-date nightly run or ``dehaze`` need not pay.
"""

from __future__ import annotations

import importlib
import sys

import typer

from urbanfusion.workflows.cli.common import app as _app
from urbanfusion.workflows.cli.common import err, flagged, out

__all__ = ["app", "main"]
# Each module and the names it adds to the app (a test checks that they match).
COMMANDS = {
    "city_commands": ("run", "plan", "batch", "demo", "demo-city", "dehaze"),
    "model_commands": ("train", "calibrate", "export", "evaluate"),
    "scene_commands": ("pretrain-image", "evaluate-image", "model"),
}


def load_commands(name: str | None = None) -> typer.Typer:
    """The app, with the module of command ``name`` imported (every module for None or another)."""
    modules = [m for m, names in COMMANDS.items() if name in names] or list(COMMANDS)
    for module in modules:
        importlib.import_module(f"{__name__}.{module}")
    return _app


def __getattr__(attr: str) -> typer.Typer:
    """``app``: the app with every command, as scripts and tests import it."""
    if attr == "app":
        return load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def main() -> None:
    """The ``urbanfusion`` console entry point: :data:`app`, with click's usage errors in one line.

    Typer draws an unknown option or an out-of-range value as a multi-line box; here it is one
    ``error:`` line like every other bad input, naming the command whose ``--help`` to read.
    """
    app = load_commands(sys.argv[1] if len(sys.argv) > 1 else None)
    try:
        code = app(prog_name="urbanfusion", standalone_mode=False)
    except typer.TyperException as e:  # click's usage errors (typer vendors click)
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":
            # A bare command (no_args_is_help): its help, with click's usage status. Rich help
            # was printed when the error was made; plain help is the error's message.
            out.print(e.format_message(), highlight=False, end="")
        else:
            where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            message = " ".join(e.format_message().split()) + where
            err.print(flagged("error:", "bold red", message), soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
