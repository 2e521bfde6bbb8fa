"""``python -m backend.cli``: the ``v2g`` command."""

from backend.cli import app

app()
