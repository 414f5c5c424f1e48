"""``python -m urbanfusion.workflows`` runs the command line (the same as ``urbanfusion``)."""

from urbanfusion.workflows.cli import main

main()
