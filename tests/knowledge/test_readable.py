"""The document the model reads: markdown markup, tables and broken Unicode become plain text, while the
document itself (what the UI shows and citations quote) is left as uploaded.

    .venv/bin/python -m pytest tests/knowledge/test_readable.py -q
"""

from __future__ import annotations

import pytest

from lab.knowledge.documents import document_from_text, readable


@pytest.mark.parametrize("markdown, plain", [
    ("## **2. Fares**", "2. Fares"),
    ("### Tickets ###", "Tickets"),
    ("A **bold** and *italic* and __strong__ and _soft_ word.", "A bold and italic and strong and soft word."),
    ("Set `lora_dropout` and gate_proj, not *_private_*.", "Set lora_dropout and gate_proj, not private."),
    ("See [the map](https://example.org/map) and ![a tram](tram.png).", "See the map and a tram."),
    ("> quoted line", "quoted line"),
    ("* star item\n+ plus item", "- star item\n- plus item"),
    ("before\n\n---\n\nafter", "before\n\nafter"),
    ("```\ncode line\n```", "code line"),
    ("line<br>break", "line break"),
])
def test_markdown_markup_is_removed(markdown, plain):
    assert readable(markdown) == plain


def test_a_table_becomes_one_line_per_row_with_column_names():
    table = "| Line | Colour | Stops |\n| --- | :---: | ---: |\n| T1 | **Red** | 16 |\n| T2 | Amber |  |\n\nAfter."
    assert readable(table) == "Line: T1; Colour: Red; Stops: 16.\nLine: T2; Colour: Amber.\n\nAfter."


def test_a_pipe_in_prose_is_not_a_table():
    assert readable("Use a | b in a shell.\nNext line.") == "Use a | b in a shell.\nNext line."


@pytest.mark.parametrize("broken, fixed", [
    ("don\u00e2\u20ac\u2122t", "don't"),  # UTF-8 bytes of ’ read as cp1252
    ("Fran\u00c3\u00a7ais", "Fran\u00e7ais"),
    ("caf\u00e9 and d\u00e9j\u00e0 vu", "caf\u00e9 and d\u00e9j\u00e0 vu"),  # real accents stay
    ("a\u00a0b", "a b"),  # no-break space
    ("soft\u00adhyphen zero\u200bwidth\ufeff", "softhyphen zerowidth"),
    ("\ufb01ne", "fine"),  # ligature
    ("\u201cquoted\u201d \u2018single\u2019 4\u201316 \u2014 dash", "\"quoted\" 'single' 4-16 - dash"),
])
def test_broken_unicode_is_repaired(broken, fixed):
    assert readable(broken) == fixed


def test_reading_twice_changes_nothing_more():
    text = "# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- **x**: y \u2014 z\n"
    assert readable(readable(text)) == readable(text)


def test_the_document_keeps_its_original_text():
    original = "# Title\n\n**Bold** \u201cquote\u201d\n"
    doc = document_from_text("notes.md", original)
    assert doc.text == original
    assert readable(doc.text) == "Title\n\nBold \"quote\""
