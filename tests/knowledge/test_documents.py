"""Tests for lab.knowledge.documents: loading .md/.txt/.pdf files and the errors users see.

    .venv/bin/python -m pytest tests/test_documents.py -q
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lab.knowledge.documents import Document, DocumentError, document_from_text, load_document


def make_pdf(page_texts: list[str]) -> bytes:
    """A minimal valid PDF with one Helvetica text line per page ('' gives a page with no text).

    pypdf 7.1 has no public API for drawing text on a page (only private `_add_object`), so the
    file is written by hand, with a correct xref table so pypdf parses it without repair.
    """

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    n_pages = len(page_texts)
    # Object numbers: 1 catalog, 2 pages, 3 font, then (page, content) pairs.
    page_ids = [4 + 2 * i for i in range(n_pages)]
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % p for p in page_ids) + b"] /Count %d >>" % n_pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for page_id, text in zip(page_ids, page_texts):
        stream = f"BT /F1 12 Tf 72 720 Td ({escape(text)}) Tj ET".encode("latin-1") if text else b""
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_id + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    return bytes(out)


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def test_load_markdown(tmp_path: Path) -> None:
    text = "# Title\n\nSome *markdown* body with ünïcödé.\n"
    doc = load_document(write(tmp_path, "notes.md", text))
    assert isinstance(doc, Document)
    assert doc.name == "notes.md"
    assert doc.text == text
    assert doc.n_chars == len(text)
    assert doc.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_load_txt_accepts_str_path_and_uppercase_extension(tmp_path: Path) -> None:
    doc = load_document(str(write(tmp_path, "README.TXT", "plain text")))
    assert doc.text == "plain text"


def test_crlf_and_bom_normalised_so_hash_matches_pasted_text(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path, "win.txt", b"\xef\xbb\xbfline one\r\nline two\r\n"))
    assert doc.text == "line one\nline two\n"
    assert doc.sha256 == document_from_text("pasted", "line one\nline two\n").sha256


def test_load_pdf(tmp_path: Path) -> None:
    pdf = make_pdf(["The capital of Zorbia is Quelm.", "", "Page three (with parens)."])
    doc = load_document(write(tmp_path, "report.pdf", pdf))
    assert doc.name == "report.pdf"
    assert "The capital of Zorbia is Quelm." in doc.text
    assert "Page three (with parens)." in doc.text
    assert doc.text.index("Zorbia") < doc.text.index("Page three")


def test_pdf_without_text(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no extractable text"):
        load_document(write(tmp_path, "scan.pdf", make_pdf(["", ""])))


def test_corrupt_pdf(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="could not be read as a PDF"):
        load_document(write(tmp_path, "broken.pdf", b"%PDF-1.4\nthis is not really a pdf\n"))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"empty \(0 bytes\)"):
        load_document(write(tmp_path, "empty.md", b""))


def test_whitespace_only_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="only whitespace"):
        load_document(write(tmp_path, "blank.txt", " \n\t\r\n"))


def test_binary_file(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01"
    with pytest.raises(DocumentError, match="binary file"):
        load_document(write(tmp_path, "image.txt", data))


def test_non_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="not valid UTF-8.*offset 3"):
        load_document(write(tmp_path, "latin1.txt", "café au lait".encode("latin-1")))


def test_oversized_file_names_size_and_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "big.txt", "x" * 1_500)
    with pytest.raises(DocumentError) as info:
        load_document(path, max_bytes=1_000)
    message = str(info.value)
    assert "1,500 bytes" in message
    assert "1,000-byte limit" in message
    # Exactly at the limit is allowed.
    assert load_document(path, max_bytes=1_500).n_chars == 1_500


def test_unsupported_extension(tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as info:
        load_document(write(tmp_path, "letter.docx", b"PK\x03\x04"))
    assert ".docx" in str(info.value)
    assert ".md, .txt, .pdf" in str(info.value)


def test_no_extension(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no extension"):
        load_document(write(tmp_path, "Makefile", "all:\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="File not found"):
        load_document(tmp_path / "nope.md")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.md"
    folder.mkdir()
    with pytest.raises(DocumentError, match="not a regular file"):
        load_document(folder)


def test_document_error_is_value_error(tmp_path: Path) -> None:
    # Callers (and the UI) may catch ValueError generically.
    with pytest.raises(ValueError):
        load_document(tmp_path / "nope.txt")


def test_invalid_max_bytes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        load_document(write(tmp_path, "a.txt", "a"), max_bytes=0)


def test_document_from_text() -> None:
    doc = document_from_text("pasted", "hello\r\nworld")
    assert doc.name == "pasted"
    assert doc.text == "hello\nworld"
    assert doc.n_chars == 11
    assert doc.sha256 == hashlib.sha256(b"hello\nworld").hexdigest()
    with pytest.raises(DocumentError, match="no text"):
        document_from_text("pasted", "  \n ")


def test_the_size_limit_is_the_upload_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "big.txt", "x" * 1_500)
    monkeypatch.setenv("LAB_MAX_UPLOAD_MB", str(1_000 / 2**20))  # about 1,000 bytes
    with pytest.raises(DocumentError, match="1,500 bytes, over the 1,000-byte limit \\(LAB_MAX_UPLOAD_MB\\)"):
        load_document(path)
    monkeypatch.delenv("LAB_MAX_UPLOAD_MB")
    assert load_document(path).n_chars == 1_500
