"""``ragops verify``: compare what the catalog says is indexed with what each store holds.

A chunk the catalog lists for a store but the store lacks is *missing* (a lost write); a chunk
a store holds but the catalog does not list is an *orphan* (a write whose run never committed,
or a catalog restored from a backup). ``repair`` deletes orphans and re-upserts the documents
with missing chunks through a normal ingest (their vectors come from the embedding cache).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from rag_ops.config import Settings

log = logging.getLogger(__name__)


def expected_ids(settings: Settings, runtime) -> dict[str, dict[str, str]]:
    """store -> {chunk id: doc id} that the catalog says the store holds."""
    docs = runtime.catalog.documents_by_id()
    holding = {d.doc_id: d.stores for d in docs.values() if d.status != "deleted" and d.stores}
    by_doc = runtime.catalog.chunks_of(sorted(holding))
    out: dict[str, dict[str, str]] = {name: {} for name in settings.stores}
    for doc_id, rows in by_doc.items():
        for name in holding[doc_id] & set(out):
            for r in rows:
                out[name][r.chunk_id] = doc_id
    return out


def verify(settings: Settings, *, repair: bool = False) -> dict:
    """Compare catalog and stores; with ``repair`` fix the differences.

    Returns:
        ``{"ok": bool, "stores": {name: {"expected", "actual", "missing", "orphans"}},
        "repaired": {...} (with repair)}``.
    """
    from rag_ops.pipeline import Runtime, ingest

    with Runtime(settings) as rt:
        expected = expected_ids(settings, rt)
        report: dict = {"stores": {}}
        missing_docs: dict[str, set[str]] = defaultdict(set)  # doc -> stores lacking some chunks
        orphans: dict[str, list[str]] = {}
        for name in settings.stores:
            actual = rt.store(name).all_ids()
            want = expected[name]
            missing = set(want) - actual
            orphans[name] = sorted(actual - set(want))
            for cid in missing:
                missing_docs[want[cid]].add(name)
            report["stores"][name] = {
                "expected": len(want), "actual": len(actual), "missing": len(missing), "orphans": len(orphans[name]),
            }
        report["ok"] = all(v["missing"] == 0 and v["orphans"] == 0 for v in report["stores"].values())
        if not repair or report["ok"]:
            return report
        removed = {name: rt.store(name).delete_ids(ids) for name, ids in orphans.items()}
        docs = rt.catalog.documents_by_id(missing_docs)
        complete = {d: set(docs[d].stores) - lacking for d, lacking in missing_docs.items() if d in docs}
        rt.catalog.mark_for_restore(sorted(complete), complete)
        rt.close()
    log.info("verify: removed orphans %s; re-ingesting %d documents with missing chunks", removed, len(missing_docs))
    restore = ingest(settings) if missing_docs else None
    after = verify(settings, repair=False)
    after["repaired"] = {
        "orphans_removed": removed,
        "documents_restored": restore["restored"] if restore else 0,
        "encoded": restore["encoded"] if restore else 0,
        "before": report["stores"],
    }
    return after
