"""The cleaning functions of rag_ops.clean, each on small hand-built inputs."""

from __future__ import annotations

import copy

import pytest

from rag_ops.clean import (
    BLOCK_CLEANERS,
    TEXT_CLEANERS,
    clean_blocks,
    clean_text,
    drop_consecutive_duplicates,
    drop_empty,
    drop_page_numbers,
    drop_repeated_headers_footers,
    normalize_unicode,
    normalize_whitespace,
)
from rag_ops.parse import Block


def _texts(blocks: list[Block]) -> list[str]:
    return [b.text for b in blocks]


def _is_subsequence(wanted: list, have: list) -> bool:
    """``wanted`` appear in ``have`` in this order (other cleaners may be added in between)."""
    it = iter(have)
    return all(any(fn is got for got in it) for fn in wanted)


def _b(text: str, page: int | None = None, section: str | None = None, kind: str = "NarrativeText") -> Block:
    return Block(text=text, kind=kind, page=page, section=section)


# --------------------------------------------------------------------------- normalize_unicode


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ﬁnal ﬂow", "final flow"),  # ligatures
        ("ＡＢＣ１２３", "ABC123"),  # full-width forms
        ("e\u0301te\u0301", "été"),  # combining accents composed
        ("x²", "x2"),  # compatibility superscript
        ("in\u200bter\u200cna\u200dtio\u2060nal", "international"),  # zero-width space/joiners
        ("\ufeffstart", "start"),  # BOM / zero-width no-break space
        ("hy\u00adphen", "hyphen"),  # soft hyphen
        ("plain text", "plain text"),
    ],
)
def test_normalize_unicode(raw, expected):
    assert normalize_unicode(raw) == expected


# --------------------------------------------------------------------------- normalize_whitespace


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a  \t  b", "a b"),  # runs of spaces and tabs fold to one space
        ("  trimmed line  ", "trimmed line"),
        ("one\n\ntwo", "one\n\ntwo"),  # a single blank line is kept
        ("one\n\n\n\n\ntwo", "one\n\ntwo"),  # several blank lines become one
        ("one\n   \n \t \n\ntwo", "one\n\ntwo"),  # lines of only spaces count as blank
        ("one\ntwo", "one\ntwo"),  # single newlines kept
        ("win\r\nline\rold mac", "win\nline\nold mac"),  # CRLF and CR become LF
        ("bell\x07 and esc\x1b and nul\x00 gone", "bell and esc and nul gone"),  # control chars dropped
        ("no\u00a0break\u2009thin\u3000ideo", "no break thin ideo"),  # unicode spaces fold
        ("form\ffeed", "form feed"),
        ("\n\n  leading and trailing blank lines  \n\n", "leading and trailing blank lines"),
    ],
)
def test_normalize_whitespace(raw, expected):
    assert normalize_whitespace(raw) == expected


def test_clean_text_applies_both_text_cleaners():
    assert _is_subsequence([normalize_unicode, normalize_whitespace], TEXT_CLEANERS)
    # NFKC turns the ideographic space into a space; zero-width chars vanish; blank lines fold
    assert clean_text("  ﬁrst\u200b   line\n\n\n\nsecond\u3000\u3000line  ") == "first line\n\nsecond line"


# --------------------------------------------------------------------------- drop_empty


def test_drop_empty_removes_blocks_without_letters_or_digits():
    blocks = [_b("•••"), _b("----"), _b(""), _b("   "), _b("* * *"), _b("a"), _b("7"), _b("é"), _b("• point one")]
    assert _texts(drop_empty(blocks)) == ["a", "7", "é", "• point one"]


# --------------------------------------------------------------------------- drop_page_numbers


@pytest.mark.parametrize(
    "text", ["Page 3 of 10", "- 4 -", "12", "page 7", "PAGE 2", "(5)", "[ 9 ]", "— 14 —", "3/10", "3 of 10"]
)
def test_drop_page_numbers_drops_page_number_lines(text):
    assert drop_page_numbers([_b(text)]) == []


@pytest.mark.parametrize(
    "text", ["Chapter 12", "12 monkeys", "2024-01-01", "12345", "Page three", "Figure 3", "Page 3 is blank"]
)
def test_drop_page_numbers_keeps_other_lines(text):
    assert _texts(drop_page_numbers([_b(text)])) == [text]


def test_drop_page_numbers_keeps_order_of_the_rest():
    blocks = [_b("Intro", 1), _b("1", 1), _b("Body text", 2), _b("- 2 -", 2), _b("End", 3)]
    assert _texts(drop_page_numbers(blocks)) == ["Intro", "Body text", "End"]


# --------------------------------------------------------------------------- drop_repeated_headers_footers


WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth"}


def _six_page_doc() -> list[Block]:
    blocks: list[Block] = []
    for page in range(1, 7):
        blocks.append(_b("ACME Corp — Confidential", page))  # on all 6 pages
        if page in (2, 5):
            blocks.append(_b("See appendix B", page))  # on 2 of 6 pages: kept
        if page in (1, 3, 5):
            blocks.append(_b("Draft version", page))  # on 3 of 6 pages: at least half, removed
        blocks.append(_b(f"Body paragraph about the {WORDS[page]} rotor blade.", page))
        blocks.append(_b(f"Page {page}", page))  # digits ignored: the same line on every page
    return blocks


def test_repeated_header_footer_removed_line_on_two_pages_kept():
    out = drop_repeated_headers_footers(_six_page_doc())
    texts = _texts(out)
    assert "ACME Corp — Confidential" not in texts
    assert "Draft version" not in texts
    assert not any(t.startswith("Page ") for t in texts)
    assert texts.count("See appendix B") == 2
    assert [t for t in texts if t.startswith("Body")] == [
        f"Body paragraph about the {WORDS[p]} rotor blade." for p in range(1, 7)
    ]
    assert len(out) == 6 + 2


def test_repeated_line_matching_is_case_insensitive():
    blocks = [_b("Annual Report", 1), _b("ANNUAL REPORT", 2), _b("annual report", 3), _b("text", 1)]
    assert _texts(drop_repeated_headers_footers(blocks)) == ["text"]


def test_line_on_three_of_seven_pages_is_kept():
    """At least 3 pages but under half of them: not a running head."""
    blocks = [_b(f"body {p}", p) for p in range(1, 8)]
    blocks += [_b("Side note", p) for p in (1, 4, 7)]
    assert _texts(drop_repeated_headers_footers(blocks)).count("Side note") == 3


def test_documents_under_three_pages_are_untouched():
    blocks = [_b("Header", 1), _b("one", 1), _b("Header", 2), _b("two", 2)]
    assert drop_repeated_headers_footers(blocks) == blocks


def test_long_lines_and_unpaged_blocks_are_never_treated_as_headers():
    long_line = "L" * 121
    blocks = [_b(long_line, p) for p in (1, 2, 3)] + [_b("Header", p) for p in (1, 2, 3)] + [_b("Header")]
    out = drop_repeated_headers_footers(blocks)
    assert _texts(out) == [long_line] * 3 + ["Header"]
    assert out[-1].page is None


# --------------------------------------------------------------------------- drop_consecutive_duplicates


def test_drop_consecutive_duplicates():
    blocks = [_b("A"), _b("A"), _b("B"), _b("A"), _b("B"), _b("B"), _b("B")]
    assert _texts(drop_consecutive_duplicates(blocks)) == ["A", "B", "A", "B"]
    assert drop_consecutive_duplicates([]) == []


# --------------------------------------------------------------------------- clean_blocks


def test_clean_blocks_end_to_end():
    assert _is_subsequence(
        [drop_empty, drop_page_numbers, drop_repeated_headers_footers, drop_consecutive_duplicates], BLOCK_CLEANERS
    )
    blocks = [
        _b("Deﬁnitions", 1, section="Deﬁnitions", kind="Title"),
        _b("A  ﬁlter\u200b removes   dust.\n\n\n\nIt is   cheap.", 1, section="Deﬁnitions"),
        _b("\u200b•\u200b", 1),  # empty once the zero-width characters are gone
        _b("   Page 1 of 2  ", 1),  # a page number once trimmed
        _b("Second page text.", 2, section="Deﬁnitions"),
        _b("Second  page text.", 2, section="Deﬁnitions"),  # a duplicate once spaces fold
    ]
    out = clean_blocks(blocks)
    assert _texts(out) == ["Definitions", "A filter removes dust.\n\nIt is cheap.", "Second page text."]
    assert [b.section for b in out] == ["Definitions", "Definitions", "Definitions"]
    assert [b.page for b in out] == [1, 1, 2]
    assert out[0].kind == "Title"


def test_clean_blocks_does_not_mutate_its_input():
    blocks = _six_page_doc() + [_b("ﬁ\u200bx  y", 6, section="Sec\u200btion"), _b("•••", 6)]
    before = copy.deepcopy(blocks)
    ids = [id(b) for b in blocks]
    out = clean_blocks(blocks)
    assert blocks == before
    assert [id(b) for b in blocks] == ids
    assert out is not blocks
    assert len(out) < len(blocks)
    cleaned = [b for b in out if b.text == "fix y"]
    assert len(cleaned) == 1 and cleaned[0].section == "Section"
    assert not any(b is orig for b in out for orig in blocks)


def test_clean_blocks_on_empty_list():
    assert clean_blocks([]) == []
