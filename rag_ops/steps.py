"""Document steps: your own function run on every document's text inside ``process_batch``.

Name them in the ``document_steps`` setting (``RAGOPS_DOCUMENT_STEPS=my_pkg.enrich:add_glossary,
my_pkg.filters.drop_boilerplate``): each is a function, importable on every worker (in Airflow
the DAGs folder is on the path, so ``examples.steps:redact_emails`` finds
``dags/examples/steps.py``), called once per cleaned text block of each document::

    def step(text: str, uri: str) -> str | None:
        ...  # return the text to index (changed or not), or None / "" to drop the block

Steps run in the order given, after cleaning and before chunking. A step that raises quarantines
the document (stage ``steps``, the step's name and exception as the reason) like any other stage's failure;
the batch goes on. Each step's counts go to the run report under ``steps``: blocks ``changed``
and ``dropped``, documents ``failed``. Chunk ids come from the text, so a changed output gives
new chunks; after you change a step, re-run the documents it affects (``full_sync`` does not
re-read unchanged files: use ``retry_quarantined`` for quarantined ones, or re-index).
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import replace
from typing import Callable

from rag_ops.errors import ConfigError, DocumentError

Step = Callable[[str, str], "str | None"]


class StepFailed(DocumentError):
    """A document step raised on a document (the document is quarantined at stage ``steps``)."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.step = name


def load_steps(paths: tuple[str, ...]) -> list[tuple[str, Step]]:
    """Import each ``module:function`` (or ``module.function``) of the setting.

    Raises:
        ConfigError: a path names no importable callable (says which and why).
    """
    steps = []
    for path in paths:
        module_name, sep, attr = path.partition(":")
        if not sep:
            module_name, _, attr = path.rpartition(".")
        if not module_name or not attr:
            raise ConfigError(f"document_steps entries look like package.module:function. Got {path!r}.")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"document step {path!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
        if not callable(fn):
            raise ConfigError(f"document step {path!r} is not a function")
        steps.append((attr, fn))
    return steps


def apply_steps(steps: list[tuple[str, Step]], blocks: list, uri: str, counts: Counter) -> list:
    """The blocks after every step (``counts`` gets ``step:<name>:changed|dropped|failed``).

    Raises:
        StepFailed: a step raised; names the step and the error (the document's text is not included).
    """
    for name, fn in steps:
        out = []
        for block in blocks:
            try:
                text = fn(block.text, uri)
            except Exception as exc:  # noqa: BLE001 - the user's code: any error quarantines the document
                counts[f"step:{name}:failed"] += 1
                raise StepFailed(name, f"{name} raised {type(exc).__name__}: {exc}"[:500]) from exc
            if text is not None and not isinstance(text, str):
                counts[f"step:{name}:failed"] += 1
                raise StepFailed(name, f"{name} returned {type(text).__name__}, not str or None")
            if not text or not text.strip():
                counts[f"step:{name}:dropped"] += 1
                continue
            if text != block.text:
                counts[f"step:{name}:changed"] += 1
                block = replace(block, text=text)
            out.append(block)
        blocks = out
    return blocks


def step_counts(counts: Counter) -> dict[str, dict[str, int]]:
    """``{step: {"changed", "dropped", "failed"}}`` from a run's counts (the report's ``steps``)."""
    out: dict[str, dict[str, int]] = {}
    for key, value in counts.items():
        if key.startswith("step:"):
            _, name, what = key.split(":", 2)
            out.setdefault(name, {"changed": 0, "dropped": 0, "failed": 0})[what] += int(value)
    return out
