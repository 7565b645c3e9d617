"""Load a user's document (.md, .txt or .pdf) as plain text for the RAG, CAG and full-context tabs.

    .venv/bin/python -m lab ask --doc path/to/notes.pdf --question "What does it conclude?" --methods full

Every loader failure raises `DocumentError` (a `ValueError`) whose message says what was wrong
and what to do about it, so the UI can show it to the user verbatim. `readable(text)` is the plain-text
reading the model gets in its prompt; `Document.text` stays as uploaded, for display and citations.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lab.core.settings import LabSettings

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".md", ".txt", ".pdf")
"""File types `load_document` accepts (compared case-insensitively)."""

class DocumentError(ValueError):
    """A document could not be loaded; the message is meant for the user."""


@dataclass(frozen=True)
class Document:
    """A loaded document: its text plus the identity used to key caches built from it."""

    name: str
    """File name shown in the UI (no directories), e.g. `notes.pdf`."""
    text: str
    """Extracted text, with line endings normalised to `\\n`."""
    sha256: str
    """Hex SHA-256 of `text` encoded as UTF-8; indexes and caches are keyed on it."""
    n_chars: int
    """Number of characters in `text`."""


def _normalise(text: str) -> str:
    # The hash keys on-disk caches, so the same content uploaded from Windows (CRLF), old Mac (CR)
    # or pasted into a text box must give the same text and therefore the same hash.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def document_from_text(name: str, text: str) -> Document:
    """Wrap already-extracted text (e.g. pasted into a text box) as a `Document`."""
    text = _normalise(text)
    if not text.strip():
        raise DocumentError(
            f"Document {name!r} has no text (it is empty or only whitespace); "
            "paste or upload some text first."
        )
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Document(name=name, text=text, sha256=digest, n_chars=len(text))


def _decode_text_file(name: str, data: bytes) -> str:
    # A NUL byte never occurs in real UTF-8 prose, but almost always in binaries (images, .docx,
    # executables) that were renamed to .txt; it gives a clearer message than a decode error.
    if b"\x00" in data:
        raise DocumentError(
            f"File {name!r} looks like a binary file, not text (it contains NUL bytes); "
            "upload a plain-text .md/.txt file or a .pdf."
        )
    try:
        # utf-8-sig drops the byte-order mark that some Windows editors prepend.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DocumentError(
            f"File {name!r} is not valid UTF-8 text (undecodable byte at offset {err.start}); "
            "re-save it with UTF-8 encoding, or upload it as a .pdf."
        ) from None


def _extract_pdf_text(name: str, data: bytes) -> str:
    # Imported here so that loading .md/.txt files does not pay for importing pypdf.
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many "encrypted" PDFs only restrict printing/copying and open with an empty
            # password; only ask the user to act when that fails.
            try:
                opened = reader.decrypt("")
            except Exception:
                opened = 0
            if not opened:
                raise DocumentError(
                    f"PDF {name!r} is password-protected; remove the password and upload it again."
                )
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except (PyPdfError, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        # pypdf signals malformed files with a mix of its own and builtin exceptions.
        raise DocumentError(
            f"File {name!r} could not be read as a PDF ({type(err).__name__}: {err}); "
            "check that it is a valid, uncorrupted PDF, or export it again."
        ) from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise DocumentError(
            f"PDF {name!r} has no extractable text ({len(pages)} page(s)); it is probably "
            "scanned images. Run OCR on it first, or paste its text instead."
        )
    return text


def load_document(path: str | Path, max_bytes: int | None = None) -> Document:
    """Read a .md, .txt or .pdf file into a `Document`; any problem raises `DocumentError`. A file over `max_bytes`
    is refused before it is read; the limit is the lab's one upload limit, LAB_MAX_UPLOAD_MB (callers holding
    settings pass settings.max_upload_bytes(); None reads it from the environment)."""
    if max_bytes is None:
        max_bytes = LabSettings().max_upload_bytes()
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
    path = Path(path)
    name = path.name
    if not path.exists():
        raise DocumentError(f"File not found: {str(path)!r}; check the path or upload the file again.")
    if not path.is_file():
        raise DocumentError(f"{str(path)!r} is not a regular file (is it a folder?); choose a file.")
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        shown = ext or "(no extension)"
        raise DocumentError(
            f"Unsupported file type {shown} for {name!r}; upload a "
            f"{', '.join(SUPPORTED_EXTENSIONS)} file (convert other formats to PDF or plain text)."
        )
    # Check the size before reading so an oversized upload is never pulled into memory.
    size = path.stat().st_size
    if size == 0:
        raise DocumentError(f"File {name!r} is empty (0 bytes); choose a file that contains text.")
    if size > max_bytes:
        raise DocumentError(
            f"File {name!r} is {size:,} bytes, over the {max_bytes:,}-byte limit (LAB_MAX_UPLOAD_MB); "
            "upload a smaller file or split it into parts."
        )
    data = path.read_bytes()
    text = _extract_pdf_text(name, data) if ext == ".pdf" else _decode_text_file(name, data)
    if not _normalise(text).strip():
        raise DocumentError(
            f"File {name!r} is empty (it contains only whitespace); choose a file that contains text."
        )
    return document_from_text(name, text)


# ---- text the model reads ------------------------------------------------------------------------
# A small model copies what it sees: given "### **2. Fares**" it answers "### **2". The prompt therefore
# gets a plain-text reading of the document, while `Document.text` stays as uploaded for display,
# hashing and citations.

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\ufffd"))  # soft hyphen, zero-widths, BOM, �
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"',
                        "\u201e": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2022": "-", "\u00b7": "-"})
# UTF-8 read as cp1252 ("donâ€™t", "FranÃ§ais"): runs of Latin-1 letters and cp1252 punctuation that
# decode as UTF-8 once encoded back. A lone accent ("café") is never such a run, so it is left alone.
_CP1252_RUN = re.compile("[\u0080-\u00ff\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
                         "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]{2,}")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_QUOTE = re.compile(r"^\s*(?:>\s?)+")
_BULLET = re.compile(r"^(\s*)[*+-]\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_INLINE = (
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # image -> its alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # link -> its text
    (re.compile(r"`([^`]+)`"), r"\1"),  # inline code
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # bold
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # *italic*
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"), r"\1"),  # _italic_, but never snake_case names
    (re.compile(r"~~(.+?)~~"), r"\1"),
    (re.compile(r"</?[A-Za-z][^>\n]*>"), " "),  # inline HTML such as <br>
)


def _fix_mojibake(line: str) -> str:
    def repair(match: re.Match) -> str:
        try:
            return match.group(0).encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return match.group(0)  # real accented text, not mis-decoded bytes

    return _CP1252_RUN.sub(repair, line)


def _inline(text: str) -> str:
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _cells(row: str) -> list[str]:
    row = row.strip()
    return [_inline(c) for c in row.strip("|").split("|")]


def _table_lines(rows: list[str]) -> list[str]:
    """A markdown table as one line per data row, each cell named by its column: 'Line: T1; Colour: Red.'"""
    header = _cells(rows[0])
    lines = []
    for row in rows[2:]:
        cells = _cells(row)
        pairs = [f"{h}: {c}" if h else c for h, c in zip(header, cells) if c]
        if pairs:
            lines.append("; ".join(pairs) + ".")
    return lines


def _is_table_start(lines: list[str], i: int) -> bool:
    return "|" in lines[i] and i + 1 < len(lines) and bool(_TABLE_RULE.match(lines[i + 1])) and "|" in lines[i + 1]


def readable(text: str) -> str:
    """The document as the model should read it: markdown markup removed, tables as one line per row,
    curly quotes, dashes, invisible characters and mis-decoded UTF-8 repaired. Wording is unchanged."""
    # Mojibake is repaired before NFKC, which would turn its "™" into "TM" and hide it.
    lines = [unicodedata.normalize("NFKC", _fix_mojibake(line)).translate(_INVISIBLE).translate(_PLAIN)
             for line in _normalise(text).split("\n")]
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_table_start(lines, i):
            end = i + 2
            while end < len(lines) and "|" in lines[end] and lines[end].strip():
                end += 1
            out += _table_lines(lines[i:end])
            i = end
            continue
        i += 1
        if _FENCE.match(line) or _RULE.match(line):
            continue
        heading = _HEADING.match(line)
        if heading:
            out += ["", _inline(heading.group(1))]
            continue
        line = _BULLET.sub(r"\1- ", _QUOTE.sub("", line))
        out.append(_inline(line) if line.strip() else "")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
