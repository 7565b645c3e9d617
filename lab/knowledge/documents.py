"""Load a user's document (.md, .txt or .pdf) as plain text for the RAG, CAG and full-context tabs.

    .venv/bin/python -m lab ask --doc path/to/notes.pdf --question "What does it conclude?" --methods full

Every loader failure raises `DocumentError` (a `ValueError`) whose message says what was wrong
and what to do about it, so the UI can show it to the user verbatim.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".md", ".txt", ".pdf")
"""File types `load_document` accepts (compared case-insensitively)."""

DEFAULT_MAX_BYTES = 2_000_000
"""Default size limit; larger files would not fit any small model's context anyway."""


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


def load_document(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """Read a .md, .txt or .pdf file into a `Document`; any problem raises `DocumentError`."""
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
            f"File {name!r} is {size:,} bytes, over the {max_bytes:,}-byte limit; "
            "upload a smaller file or split it into parts."
        )
    data = path.read_bytes()
    text = _extract_pdf_text(name, data) if ext == ".pdf" else _decode_text_file(name, data)
    if not _normalise(text).strip():
        raise DocumentError(
            f"File {name!r} is empty (it contains only whitespace); choose a file that contains text."
        )
    return document_from_text(name, text)
