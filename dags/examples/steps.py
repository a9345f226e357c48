"""Example document steps (see rag_ops/steps.py): copy this file into your DAGs folder and name
its functions in RAGOPS_DOCUMENT_STEPS, e.g. ``examples.steps:redact_emails,examples.steps:drop_boilerplate``.

Each is called once per cleaned text block of every document: return the text to index, or None
to drop the block. An exception quarantines the document (stage ``steps``).
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_BOILERPLATE = ("all rights reserved", "this page intentionally left blank")


def redact_emails(text: str, uri: str) -> str:
    """Keep e-mail addresses out of the index (and out of every answer built from it)."""
    return _EMAIL.sub("[email]", text)


def drop_boilerplate(text: str, uri: str) -> str | None:
    """Drop short blocks that are only legal boilerplate."""
    low = text.lower()
    if len(text) < 200 and any(phrase in low for phrase in _BOILERPLATE):
        return None
    return text
