"""``python -m pipeline`` runs the command line."""

from pipeline.cli import app

app(prog_name="urbanfusion")
