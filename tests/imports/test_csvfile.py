"""Reading import files: header, malformed rows and encodings, each with its line."""

from __future__ import annotations

import re
import unicodedata

import pytest

from alliance.imports.csvfile import Layout, Record, read_records
from alliance.imports.errors import ErrorLog, ImportRejected, RowProblem
from alliance.imports.members import REFUSED_CHARACTERS
from tests.imports.helpers import csv_file

LAYOUT = Layout(required=("member_number", "points"), optional=("earned_at",))


def _read(content: str | bytes) -> tuple[list[Record], list[tuple[int, RowProblem, str]]]:
    errors = ErrorLog(100)
    records = list(read_records(csv_file(content), LAYOUT, errors))
    try:
        errors.reject_if_any()
    except ImportRejected as rejected:
        return records, [(e.line, e.problem, e.message) for e in rejected.errors]
    return records, []


class TestHeader:
    def test_columns_in_any_order_and_case_with_optional_absent(self) -> None:
        records, errors = _read("Points , MEMBER_NUMBER\n5,A1\n")
        assert errors == []
        assert records == [(2, "A1", "5", None)]

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            ("", "the file is empty"),
            ("member_number\nA1\n", "required column 'points' is missing"),
            ("member_number,points,bonus\nA1,5,1\n", "unknown column 'bonus'"),
            ("member_number,points,points\nA1,5,6\n", "column 'points' appears twice"),
            (b"member_number,po\xffints\n", "not valid UTF-8"),
        ],
    )
    def test_bad_header_is_line_1(self, content: str | bytes, expected: str) -> None:
        records, errors = _read(content)
        assert records == []
        assert [(line, problem) for line, problem, _ in errors] == [(1, RowProblem.HEADER)]
        assert expected in errors[0][2]


class TestRows:
    def test_fields_are_trimmed_and_normalised_blanks_are_none(self) -> None:
        # "e" + combining acute becomes the single NFC character.
        records, errors = _read("member_number,points,earned_at\n  Ae\u0301 , 7 ,\n")
        assert errors == []
        assert records == [(2, "A\u00e9", "7", None)]

    def test_bom_crlf_quotes_and_skipped_blank_rows(self) -> None:
        content = b'\xef\xbb\xbfmember_number,points\r\n"A,1",5\r\n\r\n,\r\n"B ""2""",6\r\n'
        records, errors = _read(content)
        assert errors == []
        assert records == [(2, "A,1", "5", None), (5, 'B "2"', "6", None)]

    def test_a_quoted_newline_keeps_later_line_numbers_true(self) -> None:
        records, errors = _read('member_number,points\n"A\n1",5\nB,x,y\nC,7\n')
        assert records == [(2, "A\n1", "5", None), (5, "C", "7", None)]
        assert [(line, problem) for line, problem, _ in errors] == [(4, RowProblem.MALFORMED)]

    def test_every_malformed_row_is_reported_with_its_line(self) -> None:
        content = (
            b"member_number,points\n"
            b"A1,5\n"
            b"A2\n"  # too few fields
            b'"A3"x,5\n'  # text after a closing quote
            b"A4,5,6\n"  # too many fields
            b"A\xff5,5\n"  # not UTF-8
            b"A6\x00,5\n"  # NUL
            b"A7,7\n"
            b'"A8,8\n'  # a quote never closed
        )
        records, errors = _read(content)
        assert records == [(2, "A1", "5", None), (8, "A7", "7", None)]
        assert [(line, problem) for line, problem, _ in errors] == [
            (3, RowProblem.MALFORMED),
            (4, RowProblem.MALFORMED),
            (5, RowProblem.MALFORMED),
            (6, RowProblem.NOT_UTF8),
            (7, RowProblem.NOT_UTF8),
            (9, RowProblem.MALFORMED),
        ]
        assert "1 field(s) where the header has 2" in errors[0][2]
        assert "NUL" in errors[4][2]

    def test_errors_are_all_counted_but_only_the_first_kept(self) -> None:
        errors = ErrorLog(3)
        content = "member_number,points\n" + "x\n" * 10
        assert list(read_records(csv_file(content), LAYOUT, errors)) == []
        assert errors.count == 10
        with pytest.raises(ImportRejected) as rejected:
            errors.reject_if_any()
        assert [e.line for e in rejected.value.errors] == [2, 3, 4]
        assert rejected.value.error_count == 10


def test_refused_characters_are_those_clean_text_refuses() -> None:
    """The SQL check's character class equals clean_text's Cc, Cf and Co (bar NUL)."""
    pattern = re.compile(REFUSED_CHARACTERS)
    mismatched = [
        hex(code)
        for code in range(1, 0x110000)
        if code < 0xD800 or code > 0xDFFF
        if bool(pattern.match(chr(code))) != (unicodedata.category(chr(code)) in {"Cc", "Cf", "Co"})
    ]
    assert mismatched == []
