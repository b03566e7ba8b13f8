"""Reading an import file: CSV with a header row, streamed one record at a time.

Python parses the CSV (so every malformed row is reported with its line, not
just the first one PostgreSQL's COPY would stop at) and trims and NFC-normalises
fields the way `clean_text` does; everything else is checked in SQL, set-based.
"""

from __future__ import annotations

import codecs
import csv
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from alliance.imports.errors import ErrorLog, RowError, RowProblem

Record = tuple[int | str | None, ...]
"""A staged row: the line it starts on, then the layout's columns (None when blank)."""


@dataclass(frozen=True, slots=True)
class Layout:
    """The columns of one kind of import file, in the staging table's order."""

    required: tuple[str, ...]
    optional: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


def read_records(source: IO[bytes], layout: Layout, errors: ErrorLog) -> Iterator[Record]:
    """The file's data rows; malformed ones go to `errors` instead.

    Holds one record in memory at a time. Blank lines and rows of empty fields
    (spreadsheets export trailing `,,,`) are skipped.
    """
    bad_lines: dict[int, str] = {}
    reader = csv.reader(_decoded_lines(source, bad_lines), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        errors.add(_header_error("the file is empty: a header row is required"))
        return
    except csv.Error as error:
        errors.add(_header_error(f"the header row is not valid CSV: {error}"))
        return
    positions = _positions(header, layout, errors, _pop_bad(bad_lines, 1, reader.line_num))
    if positions is None:
        return
    width = len(header)
    while True:
        line = reader.line_num + 1
        try:
            fields: list[str] | None = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            fields, malformed = None, f"not valid CSV: {error}"
        undecodable = _pop_bad(bad_lines, line, reader.line_num) if bad_lines else None
        if undecodable is not None:
            errors.add(_row_error(line, RowProblem.NOT_UTF8, f"the row {undecodable}"))
        elif fields is None:
            errors.add(_row_error(line, RowProblem.MALFORMED, malformed))
        elif not any(field.strip() for field in fields):
            continue
        elif len(fields) != width:
            detail = f"{len(fields)} field(s) where the header has {width}"
            errors.add(_row_error(line, RowProblem.MALFORMED, detail))
        else:
            yield (line, *(None if i is None else _clean(fields[i]) for i in positions))


def _positions(
    header: list[str], layout: Layout, errors: ErrorLog, bad: str | None
) -> list[int | None] | None:
    """Where each layout column is in the file, or None (and errors) for a bad header."""
    if bad is not None:
        errors.add(_header_error(f"the header row {bad}"))
        return None
    names = [name.strip().lower() for name in header]
    expected = ", ".join(layout.columns)
    problems = [f"unknown column {name!r} (columns: {expected})"
                for name in names if name not in layout.columns]  # fmt: skip
    problems += [f"column {name!r} appears twice" for name in sorted(set(names))
                 if names.count(name) > 1]  # fmt: skip
    problems += [f"required column {name!r} is missing (columns: {expected})"
                 for name in layout.required if name not in names]  # fmt: skip
    for problem in problems:
        errors.add(_header_error(problem))
    if problems:
        return None
    return [names.index(name) if name in names else None for name in layout.columns]


def _header_error(detail: str) -> RowError:
    return _row_error(1, RowProblem.HEADER, detail)


def _row_error(line: int, problem: RowProblem, detail: str) -> RowError:
    return RowError.of(line, problem, member_number=None, detail=detail)


def _clean(field: str) -> str | None:
    text = unicodedata.normalize("NFC", field.strip())
    return text or None


def _decoded_lines(source: IO[bytes], bad_lines: dict[int, str]) -> Iterator[str]:
    """The file's lines as text; lines that are not UTF-8 (or hold NUL) noted in `bad_lines`.

    Decoding line by line keeps the reader going past a bad line, so each one is
    reported; PostgreSQL text cannot hold NUL at all.
    """
    for number, raw in enumerate(source, start=1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            bad_lines[number] = "is not valid UTF-8 text (save the file as UTF-8)"
            text = raw.decode(errors="replace")
        if "\x00" in text:
            bad_lines[number] = "contains a NUL character"
            text = text.replace("\x00", "")
        yield text


def _pop_bad(bad_lines: dict[int, str], first: int, last: int) -> str | None:
    """The problem of the first bad line among a record's lines; forgets those lines."""
    found = [bad_lines.pop(number) for number in range(first, last + 1) if number in bad_lines]
    return found[0] if found else None
