"""parse_document and decode_text on real files built in tmp_path (reportlab PDFs, python-docx)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag_ops.errors import DocumentError, DocumentTooLarge, ParseError, UnsupportedFormat
from rag_ops.parse import Block, decode_text, parse_document


# --------------------------------------------------------------------------- helpers


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _parse(path: Path, **kw) -> list[Block]:
    return parse_document(path.read_bytes(), path.name, **kw)


def _joined(blocks: list[Block]) -> str:
    """All block text with whitespace folded, for containment checks."""
    return " ".join(" ".join(b.text for b in blocks).split())


def _text_pdf(path: Path, pages: list[list[str]]) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    for lines in pages:
        y = 780
        for line in lines:
            c.drawString(72, y, line)
            y -= 24
        c.showPage()
    c.save()
    return path


def _image_only_pdf(path: Path) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    c.setFillColorRGB(0.2, 0.4, 0.8)
    c.rect(100, 300, 300, 200, fill=1, stroke=1)
    c.showPage()
    c.save()
    return path


# --------------------------------------------------------------------------- plain text


def test_txt_utf8(tmp_path):
    text = "Naïve café owners in Zürich sell crème brûlée — “quoted” — for 5 €.\n\nSecond paragraph: 東京 and Ωmega.\n"
    blocks = _parse(_file(tmp_path, "notes.txt", text.encode("utf-8")))
    joined = _joined(blocks)
    assert "Naïve café owners in Zürich sell crème brûlée — “quoted” — for 5 €." in joined
    assert "Second paragraph: 東京 and Ωmega." in joined
    assert all(b.page is None for b in blocks)
    assert all(isinstance(b, Block) and b.text == b.text.strip() and b.text for b in blocks)


def test_txt_utf8_bom_is_not_part_of_the_text(tmp_path):
    blocks = _parse(_file(tmp_path, "bom.txt", b"\xef\xbb\xbfHello with a byte order mark.\n"))
    assert blocks[0].text == "Hello with a byte order mark."
    assert "\ufeff" not in _joined(blocks)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Der Bär läuft über die Straße. Schöne Grüße aus München! Die Mädchen essen Käse.", id="german"),
        pytest.param("El niño comió piña en la mañana. ¿Dónde está la estación? Él respondió: ¡aquí!", id="spanish"),
        pytest.param(
            "Le café est très agréable. Nous avons mangé une crêpe à la cannelle près de la fenêtre.", id="french"
        ),
    ],
)
def test_txt_latin1_accents_decode_correctly(tmp_path, text):
    blocks = _parse(_file(tmp_path, "legacy.txt", (text + "\n").encode("latin-1")))
    assert _joined(blocks) == text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-bom"])
def test_txt_utf16_with_bom(tmp_path, encoding):
    text = "Grüße aus Köln — this file is UTF-16 with a byte order mark.\n\nSecond paragraph here.\n"
    data = text.encode("utf-16") if encoding == "utf-16" else b"\xfe\xff" + text.encode("utf-16-be")
    blocks = _parse(_file(tmp_path, "wide.txt", data))
    joined = _joined(blocks)
    assert "Grüße aus Köln — this file is UTF-16 with a byte order mark." in joined
    assert "Second paragraph here." in joined
    assert "\x00" not in joined


def test_txt_extension_is_case_insensitive_and_uri_names_work():
    blocks = parse_document(b"Shouting extension text body.\n", "s3://bucket/dir/README.TXT")
    assert _joined(blocks) == "Shouting extension text body."


# --------------------------------------------------------------------------- markdown / html


def test_markdown_sections_follow_headings(tmp_path):
    md = (
        "This preamble paragraph comes before any heading at all, so it has no section.\n\n"
        "# Installation\n\n"
        "Run the installer and accept the licence agreement to continue.\n\n"
        "## Requirements\n\n"
        "You need at least four gigabytes of memory and a recent operating system.\n\n"
        "# Usage\n\n"
        "Start the program from the menu and open a project file.\n"
    )
    blocks = _parse(_file(tmp_path, "guide.md", md.encode()))
    by_text = {b.text: b for b in blocks}
    assert by_text["This preamble paragraph comes before any heading at all, so it has no section."].section is None
    assert by_text["Installation"].kind == "Title"
    assert by_text["Run the installer and accept the licence agreement to continue."].section == "Installation"
    assert (
        by_text["You need at least four gigabytes of memory and a recent operating system."].section == "Requirements"
    )
    assert by_text["Start the program from the menu and open a project file."].section == "Usage"
    # reading order is kept
    texts = [b.text for b in blocks]
    assert texts.index("Installation") < texts.index("Requirements") < texts.index("Usage")
    assert not any(b.text.startswith("#") for b in blocks)


def test_html_headings_paragraphs_and_no_script_or_style(tmp_path):
    html = """<!DOCTYPE html>
<html><head><title>Fleet API reference</title>
<style>body { color: red; } .hidden-style-rule { display: none; }</style>
<script>var leakedScriptVariable = "from the head script";</script>
</head><body>
<h1>Rate limits</h1>
<p>The fleet API accepts six hundred requests per minute for each token.</p>
<script>console.log("body script text must not appear");</script>
<h2>Pagination</h2>
<p>List endpoints return one hundred items per page and a cursor.</p>
<style>.inline-style-rule { margin: 0; }</style>
</body></html>"""
    blocks = _parse(_file(tmp_path, "api.html", html.encode()))
    joined = _joined(blocks)
    by_text = {b.text: b for b in blocks}
    assert by_text["Rate limits"].kind == "Title"
    assert by_text["The fleet API accepts six hundred requests per minute for each token."].section == "Rate limits"
    assert by_text["List endpoints return one hundred items per page and a cursor."].section == "Pagination"
    for leaked in ("leakedScriptVariable", "body script text", "console.log", "color: red", "hidden-style-rule",
                   "inline-style-rule", "<p>", "<h1>"):
        assert leaked not in joined


# --------------------------------------------------------------------------- PDF


def test_pdf_multi_page_text_with_page_numbers(tmp_path):
    pages = [
        [f"Chapter {n} heading", f"The turbine inspection report continues on page number {n} with marker{n}x."]
        for n in range(1, 5)
    ]
    blocks = _parse(_text_pdf(tmp_path / "report.pdf", pages))
    # the known trap: a PDF that silently yields no elements
    assert len(blocks) >= 4
    assert sorted({b.page for b in blocks}) == [1, 2, 3, 4]
    for n in range(1, 5):
        on_page = " ".join(b.text for b in blocks if b.page == n)
        assert f"marker{n}x" in on_page
        assert f"Chapter {n} heading" in on_page
        for other in set(range(1, 5)) - {n}:
            assert f"marker{other}x" not in on_page
    assert [b.page for b in blocks] == sorted(b.page for b in blocks)


def test_pdf_image_only_raises_parse_error_no_text(tmp_path):
    with pytest.raises(ParseError, match="no text"):
        _parse(_image_only_pdf(tmp_path / "scan.pdf"))


def test_pdf_over_max_pages_raises_document_too_large(tmp_path):
    path = _text_pdf(tmp_path / "long.pdf", [[f"Page {n} body text"] for n in range(1, 6)])
    with pytest.raises(DocumentTooLarge, match="5 pages"):
        _parse(path, max_pdf_pages=4)
    # at the cap it parses
    assert {b.page for b in _parse(path, max_pdf_pages=5)} == {1, 2, 3, 4, 5}


def test_pdf_corrupt_raises_parse_error(tmp_path):
    path = _file(tmp_path, "broken.pdf", b"%PDF-1.4 garbage garbage garbage\n" + b"\x8f\x00junk" * 50)
    with pytest.raises(ParseError) as info:
        _parse(path)
    assert isinstance(info.value, DocumentError)


def test_non_pdf_named_pdf_raises_parse_error(tmp_path):
    path = _file(tmp_path, "fake.pdf", b"This is plain text that only pretends to be a PDF.\n")
    with pytest.raises(ParseError, match="not a PDF"):
        _parse(path)


# --------------------------------------------------------------------------- DOCX


def test_docx_sections_follow_heading_1(tmp_path):
    import docx

    d = docx.Document()
    d.add_paragraph("An opening paragraph written before the first heading of the document.")
    d.add_heading("Safety Instructions", level=1)
    d.add_paragraph("Always disconnect the power supply before opening the housing.")
    d.add_paragraph("Wear protective gloves when handling the battery pack.")
    d.add_heading("Maintenance Schedule", level=1)
    d.add_paragraph("Replace the air filter every six months or after two hundred hours.")
    assert d.paragraphs[1].style.name == "Heading 1"
    path = tmp_path / "manual.docx"
    d.save(str(path))

    blocks = _parse(path)
    by_text = {b.text: b for b in blocks}
    assert by_text["An opening paragraph written before the first heading of the document."].section is None
    assert by_text["Safety Instructions"].kind == "Title"
    assert by_text["Always disconnect the power supply before opening the housing."].section == "Safety Instructions"
    assert by_text["Wear protective gloves when handling the battery pack."].section == "Safety Instructions"
    assert (
        by_text["Replace the air filter every six months or after two hundred hours."].section
        == "Maintenance Schedule"
    )


def test_docx_that_is_not_a_zip_raises_parse_error(tmp_path):
    with pytest.raises(ParseError, match="DOCX"):
        _parse(_file(tmp_path, "broken.docx", b"PK\x03\x04 this is not really a docx archive"))


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", ["empty.txt", "empty.md", "empty.html", "empty.pdf", "empty.docx"])
def test_empty_file_raises_parse_error_mentioning_empty(tmp_path, name):
    with pytest.raises(ParseError, match="empty"):
        _parse(_file(tmp_path, name, b""))


def test_whitespace_only_file_raises_parse_error(tmp_path):
    with pytest.raises(ParseError, match="whitespace"):
        _parse(_file(tmp_path, "blank.md", b" \n\n\t  \r\n"))


@pytest.mark.parametrize("nul_layout", ["sparse", "dense"])
def test_binary_garbage_named_txt_looks_binary(tmp_path, nul_layout):
    if nul_layout == "sparse":  # a few NULs: decoded, then refused for unprintable characters
        raw = bytearray(os.urandom(6000))
        raw[::40] = b"\x00" * len(raw[::40])
        data = bytes(raw)
    else:  # half NULs: not UTF-16 text either
        data = os.urandom(3000) + b"\x00" * 3000
    with pytest.raises(ParseError, match="looks binary"):
        _parse(_file(tmp_path, "data.txt", data))


@pytest.mark.parametrize("name", ["sheet.xlsx", "photo.png", "Makefile", "archive.tar.gz", "notes.txt.bak"])
def test_unsupported_extension_raises_unsupported_format(tmp_path, name):
    with pytest.raises(UnsupportedFormat) as info:
        _parse(_file(tmp_path, name, b"some content that would be text"))
    assert ".txt" in str(info.value)  # lists what is supported
    assert isinstance(info.value, DocumentError)


# --------------------------------------------------------------------------- decode_text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param("plain ascii".encode(), "plain ascii", id="ascii"),
        pytest.param("Grüße, 東京 ✓".encode("utf-8"), "Grüße, 東京 ✓", id="utf8"),
        pytest.param(b"\xef\xbb\xbfbom text", "bom text", id="utf8-bom"),
        pytest.param("wide Grüße".encode("utf-16"), "wide Grüße", id="utf16-bom"),
        pytest.param(b"\xfe\xff" + "big end".encode("utf-16-be"), "big end", id="utf16-be-bom"),
        # the UTF-32 LE BOM starts with the UTF-16 LE BOM: UTF-32 must win
        pytest.param("thirty two".encode("utf-32"), "thirty two", id="utf32-bom"),
        pytest.param("no bom but wide text".encode("utf-16-le"), "no bom but wide text", id="utf16le-no-bom"),
        pytest.param(b"hel\x00lo wor\x00ld", "hello world", id="stray-nuls-dropped"),
        pytest.param(b"line one\r\nline two\n", "line one\r\nline two\n", id="newlines-kept"),
    ],
)
def test_decode_text(data, expected):
    assert decode_text(data) == expected


def test_decode_text_utf16_big_endian_without_bom():
    assert decode_text("big endian text without a mark".encode("utf-16-be")) == "big endian text without a mark"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "file is empty"),
        (b"  \n\t \r\n", "only whitespace"),
        (b"\xff\xfe\x00\xd8", "byte-order mark"),  # UTF-16 BOM, then a lone surrogate
        (bytes(range(0, 32)) * 50, "looks binary"),  # control characters, few NULs
        (b"\x00\x00\x00\x01" * 500, "looks binary"),  # mostly NULs, not UTF-16 text
    ],
)
def test_decode_text_refuses(data, message):
    with pytest.raises(ParseError, match=message):
        decode_text(data)


# --------------------------------------------------------------------------- batched classification


def test_primed_classifier_gives_the_same_blocks_and_is_used(samples_dir):
    """Text files parsed after :func:`prime_classifier` (spaCy batched over their paragraphs)
    give exactly the blocks of unprimed parsing, and the primed results are what is used."""
    import json

    import unstructured.nlp.tokenize as tokenize

    from rag_ops.parse import classifier_texts, prime_classifier

    docs = [(str(p), p.read_bytes()) for p in sorted(samples_dir.rglob("*")) if p.suffix in (".txt", ".rst")]
    scifact = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact" / "corpus.jsonl"
    if scifact.exists():
        with open(scifact) as fh:
            for i, line in zip(range(150), fh):
                d = json.loads(line)
                docs.append((f"{d['_id']}.txt", f"{d['title']}\n\n{d['text']}\n".encode()))
    docs.append(("odd.txt", "NOTICE\n\n12345\n\n- \n\nALL CAPS LINE. Then prose follows here, with a verb.\n".encode()))

    def clear():
        for f in (tokenize._process_cached, tokenize.word_tokenize, tokenize.pos_tag, tokenize._tokenize_for_cache):
            f.cache_clear()

    parse_document(b"warm up.", "w.txt")
    clear()
    plain = [parse_document(data, name) for name, data in docs]
    clear()
    nlp = tokenize._get_nlp()
    hits_before = nlp.primed_hits
    primed = []
    for i in range(0, len(docs), 16):
        texts = [t for name, data in docs[i : i + 16] for t in classifier_texts(data, name)]
        assert prime_classifier(texts) > 0
        primed += [parse_document(data, name) for name, data in docs[i : i + 16]]
    assert primed == plain
    assert nlp.primed_hits - hits_before >= len(docs)  # at least one classification per document came primed


def test_classifier_texts_only_for_plain_text():
    from rag_ops.parse import classifier_texts

    assert classifier_texts(b"Title\n\nBody text here.", "a.txt") == ["Title", "Body text here."]
    assert classifier_texts(b"# Title\n\nBody", "a.md") == []
    assert classifier_texts(b"", "a.txt") == []
    assert classifier_texts(b"x" * 100, "a.txt", max_chars=10) == []


def test_priming_holds_a_bounded_number_of_paragraphs():
    """A huge text file must not make the primed set grow with it (a Doc is ~25 KB)."""
    from rag_ops.parse import MAX_PRIMED, PRIME_CHARS, classifier_texts, prime_classifier

    many = "\n\n".join(f"Paragraph {i} says the robot number {i} docks at bay {i}." for i in range(6000))
    assert len(many) > PRIME_CHARS
    texts = classifier_texts(many.encode(), "big.txt")
    assert sum(len(t) + 2 for t in texts) <= PRIME_CHARS + 200  # only the start of the file is read
    assert len(texts) > MAX_PRIMED
    assert prime_classifier(texts) == MAX_PRIMED
