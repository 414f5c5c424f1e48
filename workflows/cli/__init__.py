"""The ``urbanfusion`` command line: parses arguments, calls one function, prints the result.

Errors caused by input (:class:`~urbanfusion.pipeline.errors.UrbanFusionError`) print one line on
stderr and exit with status 2; there is never a traceback for bad input. The commands live in
:mod:`.city_commands`, :mod:`.model_commands` and :mod:`.scene_commands`; importing them adds them
to :data:`app`.
"""

from __future__ import annotations

import sys

import typer

from urbanfusion.workflows.cli import city_commands, model_commands, scene_commands
from urbanfusion.workflows.cli.common import app, err, flagged, out

__all__ = ["app", "main"]
COMMAND_MODULES = (city_commands, model_commands, scene_commands)


def main() -> None:
    """The ``urbanfusion`` console entry point: :data:`app`, with click's usage errors in one line.

    Typer draws an unknown option or an out-of-range value as a multi-line box; here it is one
    ``error:`` line like every other bad input, naming the command whose ``--help`` to read.
    """
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
