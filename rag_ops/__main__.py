"""``python -m rag_ops`` is the ``ragops`` CLI."""

import sys

from rag_ops.cli import main

sys.exit(main())
