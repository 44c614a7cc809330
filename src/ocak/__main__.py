"""``python -m ocak`` is the ``ocak`` command."""

from ocak.cli.main import app

app()
