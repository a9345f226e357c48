"""Document steps (rag_ops.steps): the user's functions run inside process_batch, with the
example steps of dags/examples/steps.py as a user would name them."""

from __future__ import annotations

from collections import Counter

import pytest

from rag_ops.catalog import Catalog
from rag_ops.errors import ConfigError
from rag_ops.pipeline import ingest
from rag_ops.steps import load_steps
from rag_ops.stores import open_store
from tests.conftest import REPO


def fail_on_secret(text: str, uri: str) -> str:
    if "TOP-SECRET" in text:
        raise ValueError("classified content")
    return text


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "dags"))  # as Airflow puts the DAGs folder on the path


def test_steps_change_drop_and_quarantine_with_their_own_counts(settings, corpus, examples_on_path):
    (corpus / "contacts.txt").write_text("Contacts\n\nWrite to fleet-ops@example.com for dock access.\n\n"
                                         "All rights reserved.\n")
    (corpus / "secret.txt").write_text("Budget\n\nTOP-SECRET numbers for the next quarter, not for the index.\n")
    s = settings.replace(document_steps=("examples.steps:redact_emails", "examples.steps.drop_boilerplate",
                                         "tests.test_steps:fail_on_secret"))
    report = ingest(s)
    assert report["new"] == 4 and report["failed"] == 1
    assert report["steps"]["redact_emails"]["changed"] == 1
    assert report["steps"]["drop_boilerplate"]["dropped"] == 1
    assert report["steps"]["fail_on_secret"] == {"changed": 0, "dropped": 0, "failed": 1}
    reason = next(v for k, v in report["failures"].items() if k.endswith("secret.txt"))
    assert reason.startswith("steps: fail_on_secret raised ValueError: classified content")
    cat = Catalog(s.catalog_db_url)
    try:
        failed = {d["uri"].rsplit("/", 1)[-1]: d for d in cat.quarantined()}
    finally:
        cat.close()
    assert failed["secret.txt"]["stage"] == "steps"
    for name in s.stores:
        with open_store(name, s) as store:
            texts = [t for t, _ in store.get_texts(list(store.all_ids())).values()]
        assert any("[email]" in t for t in texts) and not any("@example.com" in t for t in texts)
        assert not any("rights reserved" in t.lower() for t in texts) and not any("TOP-SECRET" in t for t in texts)
    again = ingest(s)  # nothing changed: nothing re-read, the quarantined document stays quarantined
    assert again["encoded"] == 0 and again["new"] == 0 and again["failed"] == 0


def test_bad_step_settings_say_what_is_wrong(tmp_path, examples_on_path):
    with pytest.raises(ConfigError, match="'nowhere.mod:fn' cannot be loaded: ModuleNotFoundError"):
        load_steps(("nowhere.mod:fn",))
    with pytest.raises(ConfigError, match="cannot be loaded: AttributeError"):
        load_steps(("examples.steps:missing",))
    with pytest.raises(ConfigError, match="look like package.module:function"):
        load_steps(("justaname",))
    assert [n for n, _ in load_steps(("examples.steps:redact_emails",))] == ["redact_emails"]


def test_a_step_returning_something_else_quarantines_the_document():
    from rag_ops.parse import Block
    from rag_ops.steps import StepFailed, apply_steps

    counts = Counter()
    with pytest.raises(StepFailed, match="returned int"):
        apply_steps([("bad", lambda text, uri: 3)], [Block(text="x", kind="NarrativeText")], "u", counts)
    assert counts["step:bad:failed"] == 1
