"""``python -m rag_ops`` is the ``ragops`` CLI."""

from rag_ops.cli import run

run()
