"""Bad input end to end: every bad file sits next to good documents and goes through the real
pipeline (real unstructured, Chroma + Milvus Lite on tmp_path, the packaged model).

For every case the contract is the same:

1. the good documents are indexed: catalog chunk ids == Chroma ids == Milvus ids;
2. the bad document is quarantined (``Catalog.quarantined()``) with the right stage and a reason
   a person understands, it is in the report's ``failures`` as ``"stage: reason"`` and ``failed``
   counts it; documents that are merely odd (Latin-1, UTF-16, stray NULs) are indexed instead;
3. a second ingest does no new work: nothing encoded, nothing upserted, no new quarantine rows,
   the store ids unchanged.

Each test prints ``REASON <case>: stage: reason (Ns)`` (visible with ``-s`` or ``-rP``).
"""

from __future__ import annotations

import io
import os
import random
import re
import resource
import shutil
import time
from pathlib import Path

import pytest

import rag_ops.sources.local as local_source
from rag_ops.catalog import Catalog
from rag_ops.cache import SqliteCache
from rag_ops.identity import doc_id_for
from rag_ops.pipeline import commit_run, discover, ingest, process_batch, quality_gate, upsert_store
from rag_ops.stores import open_store

from conftest import DOCS, write_corpus

STORES = ("chroma", "milvus")
MB = 1024 * 1024


# ---------------------------------------------------------------------------- helpers
def good_uris(corpus: Path) -> list[str]:
    return [str(corpus / rel) for rel in DOCS]


def store_ids(settings, name: str) -> set[str]:
    with open_store(name, settings) as store:
        return store.all_ids()


def catalog_ids(settings) -> set[str]:
    cat = Catalog(settings.catalog_db_url)
    try:
        return cat.all_chunk_ids()
    finally:
        cat.close()


def quarantine_rows(settings) -> dict[str, dict]:
    cat = Catalog(settings.catalog_db_url)
    try:
        return {r["doc_id"]: r for r in cat.quarantined()}
    finally:
        cat.close()


def documents(settings) -> dict:
    cat = Catalog(settings.catalog_db_url)
    try:
        return cat.documents_by_id()
    finally:
        cat.close()


def chunks_of(settings, doc_id: str) -> list:
    cat = Catalog(settings.catalog_db_url)
    try:
        return cat.chunks_of([doc_id]).get(doc_id, [])
    finally:
        cat.close()


def chroma_texts(settings, doc_id: str) -> list[str]:
    """The chunk texts Chroma holds for one document, in sequence order."""
    with open_store("chroma", settings) as store:
        coll = store.client.get_collection(store.collection)
        got = coll.get(where={"doc_id": doc_id}, include=["documents", "metadatas"])
    pairs = sorted(zip((m["seq"] for m in got["metadatas"]), got["documents"]))
    return [text for _, text in pairs]


def milvus_texts(settings, doc_id: str) -> list[str]:
    with open_store("milvus", settings) as store:
        assert store.exists()  # loads the collection (Milvus opens it "released" in a new client)
        rows = store.client.query(store.collection, filter=f'doc_id == "{doc_id}"', output_fields=["text", "seq"])
    return [r["text"] for r in sorted(rows, key=lambda r: r["seq"])]


def assert_stores_consistent(settings, indexed_uris: list[str]) -> set[str]:
    """Catalog ids == Chroma ids == Milvus ids, and every uri given is indexed with chunks."""
    ids = catalog_ids(settings)
    assert ids, "nothing was indexed"
    for name in STORES:
        assert store_ids(settings, name) == ids, f"{name} ids differ from the catalog's"
    docs = documents(settings)
    for uri in indexed_uris:
        row = docs.get(doc_id_for(uri))
        assert row is not None, f"{uri} is not in the catalog"
        assert row.status == "indexed", f"{uri}: status {row.status!r}, error {row.error!r}"
        assert row.chunk_count >= 1 and set(row.stores) == set(STORES)
        assert {c.chunk_id for c in chunks_of(settings, row.doc_id)} <= ids
    return ids


def assert_quarantined(settings, report: dict, uri: str, stage: str, *fragments: str) -> str:
    """The document is quarantined at ``stage`` with a reason containing every fragment."""
    rows = quarantine_rows(settings)
    did = doc_id_for(uri)
    assert did in rows, f"{uri} is not quarantined; quarantine holds {[r['uri'] for r in rows.values()]}"
    row = rows[did]
    assert row["uri"] == uri
    reason = row["reason"] or ""
    assert row["stage"] == stage, f"stage {row['stage']!r} (reason {reason!r}), expected {stage!r}"
    for fragment in fragments:
        assert fragment.lower() in reason.lower(), f"reason {reason!r} lacks {fragment!r}"
    assert report["failures"].get(uri) == f"{stage}: {reason}", report["failures"]
    doc = documents(settings)[did]
    assert doc.status == "failed" and doc.error == reason and doc.error_stage == stage
    assert not chunks_of(settings, did), "a quarantined document has chunks in the catalog"
    return reason


def snapshot(settings) -> dict:
    return {
        "catalog": catalog_ids(settings),
        **{name: store_ids(settings, name) for name in STORES},
        "quarantine": {
            did: (r["uri"], r["stage"], r["reason"], r["first_seen"]) for did, r in quarantine_rows(settings).items()
        },
    }


def assert_rerun_does_no_work(settings, before: dict, *, failed: int = 0) -> dict:
    report = ingest(settings)
    assert report["encoded"] == 0, report
    assert report["chunks"] == 0, report
    assert report["upserted"] == {name: 0 for name in STORES}, report
    assert report["new"] == report["changed"] == report["restored"] == 0, report
    assert report["failed"] == failed, report["failures"]
    after = snapshot(settings)
    assert after == before, "a re-run changed the stores, the catalog or the quarantine"
    return report


def show(case: str, settings, uri: str, seconds: float) -> None:
    row = quarantine_rows(settings)[doc_id_for(uri)]
    print(f"\nREASON {case}: {row['stage']}: {row['reason']} ({seconds:.2f}s)")


def make_pdf(text: str | None) -> bytes:
    """A real one-page PDF: with ``text`` drawn as text, or (None) only a filled rectangle."""
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    if text is None:
        c.setFillColorRGB(0.2, 0.4, 0.8)
        c.rect(100, 300, 300, 200, fill=1, stroke=1)
        c.circle(250, 650, 60, fill=1)
    else:
        y = 760
        for line in text.splitlines():
            c.drawString(72, y, line)
            y -= 16
    c.showPage()
    c.save()
    return buf.getvalue()


def corrupt_pdf() -> bytes:
    """Starts like a PDF, then 4 KB of (seeded, so always the same) garbage."""
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + random.Random(20240611).randbytes(4096)


def binary_garbage() -> bytes:
    data = bytearray(os.urandom(64 * 1024))
    for i in range(0, len(data), 97):  # NULs guaranteed, not only the ~1/256 chance
        data[i] = 0
    return bytes(data)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"{field}:\s+(\d+)", fh.read()).group(1))


class PeakMemory:
    """Peak RSS growth over a block: the peak RSS inside the block minus the RSS at its start.

    On Linux the high-water mark (VmHWM, what ru_maxrss reports) is reset to the current RSS
    first (``/proc/self/clear_refs`` 5), so a peak reached by an earlier test cannot hide one
    inside the block. Where the reset is refused, ru_maxrss growth is used (a lower bound).
    """

    def __enter__(self):
        self.rss_before = _rss_kb("VmRSS")
        self.maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        return self

    def __exit__(self, *exc):
        if self.reset:
            self.growth_mb = (_rss_kb("VmHWM") - self.rss_before) / 1024
            self.method = "VmHWM after reset - VmRSS before"
        else:
            self.growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.maxrss_before) / 1024
            self.method = "ru_maxrss growth"
        return False


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """One ingest in a throwaway data dir so the model, unstructured, GX and the store clients
    are loaded before a test measures memory."""
    from rag_ops.config import Settings

    root = tmp_path_factory.mktemp("warm")
    ingest(Settings(data_dir=root / "data", source=str(write_corpus(root / "src")), batch_size=2))


# ---------------------------------------------------------------------------- quarantined files
QUARANTINE_CASES = {
    # case: (relative path, bytes, stage, reason fragments)
    "corrupt_pdf": ("manuals/broken.pdf", corrupt_pdf, "parse", ("corrupt PDF",)),
    "zero_byte": ("notes/empty.txt", lambda: b"", "parse", ("empty", "0 bytes")),
    "binary_named_txt": ("notes/blob.txt", binary_garbage, "parse", ("binary", "not text")),
    "image_only_pdf": ("scans/drawing.pdf", lambda: make_pdf(None), "parse", ("no text", "OCR")),
    "html_all_script_style": (
        "web/app.html",
        lambda: (
            b"<html><head><style>body { color: red; } .x { margin: 0 }</style>"
            b"<script>var greeting = 'hello world, this sentence lives in a script';</script></head>"
            b"<body><script>document.write(greeting);</script><style>p { padding: 1px }</style></body></html>"
        ),
        "parse",
        ("no text",),
    ),
    "unsupported_extension": ("data/export.xyz", lambda: b"plain words in a file type nobody parses\n", "parse",
                              ("'.xyz'", "no parser")),
}


@pytest.mark.parametrize("case", list(QUARANTINE_CASES))
def test_bad_file_is_quarantined_next_to_good_ones(case, settings, corpus):
    rel, build, stage, fragments = QUARANTINE_CASES[case]
    bad = corpus / rel
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(build())

    t0 = time.perf_counter()
    report = ingest(settings)
    seconds = time.perf_counter() - t0

    assert report["seen"] == 4 and report["new"] == 3 and report["failed"] == 1, report["failures"]
    assert set(report["failures"]) == {str(bad)}
    ids = assert_stores_consistent(settings, good_uris(corpus))
    assert report["upserted"] == {name: len(ids) for name in STORES}
    assert_quarantined(settings, report, str(bad), stage, *fragments)
    show(case, settings, str(bad), seconds)

    again = assert_rerun_does_no_work(settings, snapshot(settings))
    assert again["unchanged"] == 4


# ---------------------------------------------------------------------------- odd but valid text
LATIN1_TEXT = (
    "Café opening hours\n\n"
    "The café on the third floor serves crème brûlée and pâté every weekday. "
    "The façade terrace opens at noon; très bien for a naïve visitor. "
    "Öffnungszeiten: täglich außer Sonntag, Größe der Gruppe höchstens zwölf.\n"
)
UTF16_TEXT = (
    "Zürich office guide\n\n"
    "The Zürich office descales the coffee machine every Friday at nine. "
    "Visitors from 東京 and São Paulo sign in at the front desk — badges are returned on leaving. "
    "Ελληνικά signs mark the fire exits.\n"
)
NUL_TEXT = (
    "Pump maintenance\n\n"
    "The hydraulic pump runs at forty bar during normal operation.\x00 "
    "Replace the shaft seal once a year\x00 and log the pressure after every service. \x00"
    "Technicians wear gloves when they open the housing.\n"
)

ENCODING_CASES = {
    # case: (relative path, bytes, words that must survive intact)
    "latin1_text": ("notes/cafe.txt", LATIN1_TEXT.encode("latin-1"),
                    ["Café", "crème brûlée", "pâté", "façade", "très", "naïve", "außer", "Größe", "zwölf"]),
    "utf16_bom_text": ("notes/zurich.txt", UTF16_TEXT.encode("utf-16"),
                       ["Zürich", "東京", "São Paulo", "Ελληνικά", "descales the coffee machine"]),
    "stray_nul_bytes": ("notes/pump.txt", NUL_TEXT.encode("utf-8"),
                        ["hydraulic pump runs at forty bar", "Replace the shaft seal once a year",
                         "Technicians wear gloves"]),
}


@pytest.mark.parametrize("case", list(ENCODING_CASES))
def test_odd_encoding_is_indexed_with_text_intact(case, settings, corpus):
    rel, data, words = ENCODING_CASES[case]
    path = corpus / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if case == "utf16_bom_text":
        assert data[:2] == b"\xff\xfe"
    if case == "stray_nul_bytes":
        assert data.count(0) == 3

    t0 = time.perf_counter()
    report = ingest(settings)
    seconds = time.perf_counter() - t0

    assert report["failed"] == 0, report["failures"]
    assert report["new"] == 4 and not quarantine_rows(settings)
    assert_stores_consistent(settings, good_uris(corpus) + [str(path)])
    did = doc_id_for(str(path))
    for texts, store in ((chroma_texts(settings, did), "chroma"), (milvus_texts(settings, did), "milvus")):
        assert texts, f"{store} holds no chunk of {rel}"
        joined = "\n".join(texts)
        for word in words:
            assert word in joined, f"{store}: {word!r} not in the stored text {joined!r}"
        assert "\x00" not in joined and "\ufffd" not in joined
        assert "Ã" not in joined, f"{store}: mojibake in {joined!r}"
    print(f"\nINDEXED {case}: {len(texts)} chunk(s), text intact ({seconds:.2f}s)")

    assert_rerun_does_no_work(settings, snapshot(settings))


# ---------------------------------------------------------------------------- size caps
@pytest.mark.parametrize(
    "case, size, stage, fragments",
    [
        # 50 MB (decimal): under max_document_bytes (50 MiB), but more bytes than the
        # max_document_chars cap can hold: refused after reading, before decoding/partitioning
        ("text_50MB", 50_000_000, "parse", ("50,000,000 bytes", "max_document_chars", "5,000,000", "before parsing")),
        # one byte over max_document_bytes: refused before the file is read at all
        ("text_over_byte_cap", 50 * MB + 1, "read", ("52,428,801 bytes", "max_document_bytes", "52,428,800")),
    ],
)
def test_huge_text_file_is_refused_before_parsing(case, size, stage, fragments, settings, corpus, warm):
    # distinct numbered lines (a repeated line would be collapsed by the cleaner, hiding a
    # missing pre-parse check behind a small extracted text)
    big = corpus / "logs/huge.txt"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as fh:
        written, n = 0, 0
        while written < size:
            lines = "".join(
                f"{n + i:09d} pump {n + i} ran at {(n + i) % 97} bar while the quick brown fox jumped over dog {i}.\n"
                for i in range(10_000)
            ).encode()
            n += 10_000
            part = lines[: size - written]
            fh.write(part)
            written += len(part)
    assert big.stat().st_size == size

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        report = ingest(settings)
        seconds = time.perf_counter() - t0

    assert report["new"] == 3 and report["failed"] == 1, report["failures"]
    assert_stores_consistent(settings, good_uris(corpus))
    reason = assert_quarantined(settings, report, str(big), stage, *fragments)
    show(case, settings, str(big), seconds)
    print(f"MEMORY {case}: peak RSS growth {mem.growth_mb:.0f} MB ({mem.method})")
    # refused before parsing: unstructured never saw it (the good documents' parse is well under 5 s)
    assert report["seconds"].get("parse", 0) < 5, report["seconds"]
    assert seconds < 30, f"{case} took {seconds:.1f}s"
    assert mem.growth_mb < 400, f"peak RSS grew by {mem.growth_mb:.0f} MB ({reason})"

    again = assert_rerun_does_no_work(settings, snapshot(settings))
    assert again["seconds"].get("read", 0) < 0.5  # skipped unread: its size and mtime did not move


@pytest.mark.parametrize(
    "case, n_chars, stage, fragments",
    [
        # exactly max_document_chars: not too large, so the no-word-boundaries check must catch it
        ("one_line_5000000_chars", 5_000_000, "clean", ("no word boundaries", "5,000,000 characters", "0 spaces")),
        # 5 MiB: over max_document_chars, refused once decoded, before partitioning
        ("one_line_5MiB", 5 * MB, "parse", ("5,242,880 characters", "max_document_chars", "5,000,000", "before parsing")),
    ],
)
def test_single_huge_line_without_spaces_is_refused(case, n_chars, stage, fragments, settings, corpus, warm):
    import hashlib

    unit = hashlib.sha256(b"ragops").hexdigest()  # hex digits: no space, no punctuation
    path = corpus / "dumps/blob.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes((unit * (n_chars // len(unit) + 1))[:n_chars].encode())

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        report = ingest(settings)
        seconds = time.perf_counter() - t0

    assert report["new"] == 3 and report["failed"] == 1, report["failures"]
    assert_stores_consistent(settings, good_uris(corpus))
    assert_quarantined(settings, report, str(path), stage, *fragments)
    show(case, settings, str(path), seconds)
    print(
        f"TIMING {case}: ingest {seconds:.2f}s, parse {report['seconds'].get('parse', 0):.2f}s, "
        f"clean {report['seconds'].get('clean', 0):.2f}s; peak RSS growth {mem.growth_mb:.0f} MB"
    )
    assert seconds < 60, f"{case} took {seconds:.1f}s"
    assert mem.growth_mb < 400, f"peak RSS grew by {mem.growth_mb:.0f} MB"

    assert_rerun_does_no_work(settings, snapshot(settings))


# ---------------------------------------------------------------------------- source problems
def test_symlink_outside_the_source_root_is_refused_at_listing(settings, corpus, tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("Payroll: the CEO earns a secret amount. This text must never be indexed.\n")
    link = corpus / "notes" / "payroll.txt"
    link.parent.mkdir()
    link.symlink_to(secret)

    t0 = time.perf_counter()
    report = ingest(settings)
    seconds = time.perf_counter() - t0

    assert report["new"] == 3 and report["failed"] == 1, report["failures"]
    assert_stores_consistent(settings, good_uris(corpus))
    assert_quarantined(settings, report, str(link), "list", "symlink", "outside the source root")
    show("symlink_outside_root", settings, str(link), seconds)
    assert report["seconds"].get("read", 0) < 1
    with open_store("chroma", settings) as store:
        stored = store.client.get_collection(store.collection).get(include=["documents"])["documents"]
    assert not any("Payroll" in t for t in stored)

    # A refused listing entry has no size/mtime to compare, so every run reports it again
    # (failed == 1), but it is never read, encoded or written, and its quarantine row stays one row.
    assert_rerun_does_no_work(settings, snapshot(settings), failed=1)


@pytest.mark.parametrize("name", ["policies/expenses.md", "robots/expenses.txt"])
def test_file_deleted_between_listing_and_reading(settings, corpus, name):
    # a .txt beside another .txt is read ahead with it (its paragraphs classified in one batch):
    # the read error must still quarantine it alone, at its read stage
    victim = corpus / name
    victim.write_text("# Expenses\n\nTaxis are reimbursed with a receipt up to 40 EUR per ride.\n")

    t0 = time.perf_counter()
    plan = discover(settings)  # the steps as ingest runs them, with the deletion in between
    assert plan.counts["candidates"] == 4
    victim.unlink()
    for ref in plan.batches:
        process_batch(settings, ref)
    quality_gate(settings, plan.ref)
    results = [upsert_store(settings, name, plan.ref) for name in plan.stores]
    report = commit_run(settings, plan.ref, results)
    seconds = time.perf_counter() - t0

    assert report["new"] == 3 and report["failed"] == 1, report["failures"]
    assert_stores_consistent(settings, good_uris(corpus))
    assert_quarantined(settings, report, str(victim), "read", "deleted after it was listed")
    show("deleted_before_read", settings, str(victim), seconds)

    again = assert_rerun_does_no_work(settings, snapshot(settings))
    assert again["seen"] == 3 and again["unchanged"] == 3
    # the next full sync forgets it: the quarantine row goes, the stores keep the good documents
    full = ingest(settings, full_sync=True)
    assert full["deleted"] == 1 and full["encoded"] == 0
    assert doc_id_for(str(victim)) not in quarantine_rows(settings)
    assert_stores_consistent(settings, good_uris(corpus))


@pytest.mark.parametrize("how", ["appended", "touched"])
def test_file_changing_while_read_is_quarantined_then_indexed_when_stable(how, settings, corpus, monkeypatch):
    target = corpus / "robots" / "arm.txt"
    target.write_text(
        "R9 Arm Calibration\n\nCalibrate the R9 arm after every gripper change. "
        "Home all six joints, then run the laser jig until the offset is under a tenth of a millimetre.\n"
    )
    real_open = open
    changed = []

    class ChangingFile:
        """A real file object whose read() is followed by a writer changing the file, i.e. the
        file changes after the bytes were read and before the reader checks it again."""

        def __init__(self, fh):
            self._fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

        def fileno(self):
            return self._fh.fileno()

        def read(self, *args):
            data = self._fh.read(*args)
            if how == "appended":
                with real_open(target, "a") as w:
                    w.write("Log the offset in the maintenance book.\n")
            else:  # same bytes, rewritten: only the mtime moves
                st = os.stat(target)
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
            changed.append(how)
            return data

    def changing_open(path, *args, **kwargs):
        fh = real_open(path, *args, **kwargs)
        return ChangingFile(fh) if Path(path) == target else fh

    with monkeypatch.context() as m:
        m.setattr(local_source, "open", changing_open, raising=False)
        t0 = time.perf_counter()
        report = ingest(settings)
        seconds = time.perf_counter() - t0
    assert changed == [how]

    assert report["new"] == 3 and report["failed"] == 1, report["failures"]
    assert_stores_consistent(settings, good_uris(corpus))
    assert_quarantined(settings, report, str(target), "read", "changed while it was being read")
    show(f"changed_while_read_{how}", settings, str(target), seconds)

    # the file is stable now: the next run reads it again and indexes it
    stable = ingest(settings)
    assert stable["failed"] == 0, stable["failures"]
    assert stable["changed"] + stable["new"] == 1, stable
    assert doc_id_for(str(target)) not in quarantine_rows(settings)
    assert_stores_consistent(settings, good_uris(corpus) + [str(target)])
    texts = "\n".join(chroma_texts(settings, doc_id_for(str(target))))
    assert "laser jig" in texts
    if how == "appended":
        assert "maintenance book" in texts

    assert_rerun_does_no_work(settings, snapshot(settings))


# ---------------------------------------------------------------------------- duplicates
def test_duplicate_content_under_two_names_is_encoded_once(settings, corpus):
    original = corpus / "robots" / "battery.txt"
    copy = corpus / "robots" / "battery-copy.txt"
    shutil.copyfile(original, copy)

    report = ingest(settings)
    assert report["new"] == 4 and report["failed"] == 0, report["failures"]
    ids = assert_stores_consistent(settings, good_uris(corpus) + [str(copy)])

    a, b = doc_id_for(str(original)), doc_id_for(str(copy))
    chunks_a, chunks_b = chunks_of(settings, a), chunks_of(settings, b)
    assert chunks_a and len(chunks_a) == len(chunks_b)
    assert not {c.chunk_id for c in chunks_a} & {c.chunk_id for c in chunks_b}, "duplicates share chunk ids"
    assert [c.text_hash for c in chunks_a] == [c.text_hash for c in chunks_b]
    assert chroma_texts(settings, a) == chroma_texts(settings, b)

    cat = Catalog(settings.catalog_db_url)
    try:
        all_chunks = [c for rows in cat.chunks_of(list(documents(settings))).values() for c in rows]
    finally:
        cat.close()
    distinct = {c.text_hash for c in all_chunks}
    assert len(all_chunks) == len(ids) == report["chunks"] and len(distinct) < len(all_chunks)
    # every distinct text is encoded once: the copy's chunks come from the embedding cache
    # (batch_size=2 puts the two files in different batches) or the in-batch de-duplication
    assert report["encoded"] == len(distinct), (report["encoded"], len(distinct), report["cache_hits"])
    assert report["encoded"] + report["cache_hits"] <= report["chunks"]
    cache = SqliteCache(settings.cache_path)
    try:
        assert cache.count() == len(distinct)
    finally:
        cache.close()
    # both copies carry the same vector, under different ids
    with open_store("chroma", settings) as store:
        coll = store.client.get_collection(store.collection)
        va = coll.get(where={"doc_id": a}, include=["embeddings"])["embeddings"]
        vb = coll.get(where={"doc_id": b}, include=["embeddings"])["embeddings"]
    assert len(va) == len(vb) >= 1 and all((x == y).all() for x, y in zip(va, vb))
    print(
        f"\nDUPLICATE: chunks {report['chunks']}, distinct texts {len(distinct)}, "
        f"encoded {report['encoded']}, cache hits {report['cache_hits']}"
    )

    assert_rerun_does_no_work(settings, snapshot(settings))


def test_a_log_of_title_like_lines_is_indexed_once_in_a_few_chunks(settings, corpus):
    """A plain-text list whose every line unstructured reads as a title (a log, readings): each
    line is indexed once, in a few chunks (each used to be repeated into the next ones' heading,
    doubling the chunks with every line: 40 lines would exhaust any memory)."""
    lines = [f"Sample number {round(1796291772.35 + 97.13 * i, 4)} about the flow." for i in range(40)]
    log_file = corpus / "robots" / "samples.txt"
    log_file.write_text("\n\n".join(lines) + "\n")
    report = ingest(settings)
    assert report["failed"] == 0 and report["new"] == 4, report["failures"]
    assert_stores_consistent(settings, good_uris(corpus) + [str(log_file)])
    doc = doc_id_for(str(log_file))
    texts = chroma_texts(settings, doc)
    assert 1 <= len(texts) <= 5 and len(set(texts)) == len(texts), len(texts)
    joined = "\n".join(texts)
    assert [line for line in lines if joined.count(line) != 1] == []
    assert_rerun_does_no_work(settings, snapshot(settings))


# ---------------------------------------------------------------------------- retries
def test_quarantined_pdf_is_retried_when_its_content_changes(settings, corpus):
    pdf = corpus / "manuals" / "r7.pdf"
    pdf.parent.mkdir()
    pdf.write_bytes(corrupt_pdf())
    first = ingest(settings)
    assert first["failed"] == 1
    assert_quarantined(settings, first, str(pdf), "parse", "corrupt PDF")
    show("corrupt_pdf_before_fix", settings, str(pdf), first["seconds"]["total"])

    # unchanged bytes: not retried
    assert_rerun_does_no_work(settings, snapshot(settings))

    pdf.write_bytes(make_pdf("R7 charging dock\nThe charging dock needs a dedicated 16 A circuit.\n"
                             "Keep half a metre of free space around the dock for airflow."))
    fixed = ingest(settings)
    assert fixed["failed"] == 0, fixed["failures"]
    assert fixed["changed"] == 1 and fixed["encoded"] >= 1
    assert doc_id_for(str(pdf)) not in quarantine_rows(settings)
    assert_stores_consistent(settings, good_uris(corpus) + [str(pdf)])
    assert "16 A circuit" in "\n".join(chroma_texts(settings, doc_id_for(str(pdf))))

    assert_rerun_does_no_work(settings, snapshot(settings))


def test_retry_quarantined_processes_again_without_duplicates(settings, corpus):
    pdf = corpus / "manuals" / "r7.pdf"
    pdf.parent.mkdir()
    pdf.write_bytes(corrupt_pdf())
    first = ingest(settings)
    reason = assert_quarantined(settings, first, str(pdf), "parse", "corrupt PDF")
    before = snapshot(settings)
    row_before = quarantine_rows(settings)[doc_id_for(str(pdf))]

    retry = ingest(settings, retry_quarantined=True)
    assert retry["failed"] == 1 and retry["unchanged"] == 3, retry
    assert retry["encoded"] == 0 and retry["upserted"] == {name: 0 for name in STORES}
    assert retry["failures"] == {str(pdf): f"parse: {reason}"}
    row = quarantine_rows(settings)[doc_id_for(str(pdf))]
    assert row["first_seen"] == row_before["first_seen"]
    # really processed again (its row was refreshed by this run), not skipped as unchanged
    assert row["last_run_id"] == retry["run_id"] != row_before["last_run_id"]
    assert row["last_seen"] > row_before["last_seen"]
    assert snapshot(settings) == before  # still quarantined, one row, no new chunks anywhere
    assert_stores_consistent(settings, good_uris(corpus))

    # and a plain run afterwards leaves it alone again
    assert_rerun_does_no_work(settings, before)


def test_medium_text_file_over_the_char_cap_is_refused_before_partitioning(settings, corpus, warm):
    """Between max_document_chars and 4x that in bytes, the decoded length decides, before
    unstructured partitions the text (a 6 MB text file used to take minutes to partition)."""
    small = settings.replace(max_document_chars=200_000)
    path = corpus / "logs/big.txt"
    path.parent.mkdir(parents=True)
    path.write_text("A line of an ordinary log file that goes on and on.\n" * 6000)  # ~312k chars
    t0 = time.perf_counter()
    report = ingest(small)
    seconds = time.perf_counter() - t0
    assert report["failed"] == 1 and report["new"] == 3
    assert_quarantined(small, report, str(path), "parse", "over the max_document_chars cap of 200,000", "before parsing")
    assert report["seconds"].get("parse", 0) < 5, report["seconds"]
    assert seconds < 60
