"""What can be wrong with an import file, row by row."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from alliance.errors import InvalidInput
from alliance.validation import MAX_POINTS


class RowProblem(enum.StrEnum):
    """Stable codes of row errors: the SQL checks emit them, tests assert on them."""

    HEADER = "header"
    MALFORMED = "malformed"
    NOT_UTF8 = "not_utf8"
    MISSING_MEMBER_NUMBER = "missing_member_number"
    INVALID_MEMBER_NUMBER = "invalid_member_number"
    DUPLICATE_MEMBER_NUMBER = "duplicate_member_number"
    INVALID_DISPLAY_NAME = "invalid_display_name"
    MEMBER_NUMBER_TAKEN = "member_number_taken"
    UNKNOWN_MEMBER_NUMBER = "unknown_member_number"
    MEMBERSHIP_CLOSED = "membership_closed"
    MISSING_POINTS = "missing_points"
    INVALID_POINTS = "invalid_points"
    INVALID_EARNED_AT = "invalid_earned_at"
    EARNED_IN_FUTURE = "earned_in_future"
    INVALID_EXPIRES_AT = "invalid_expires_at"
    EXPIRES_IN_PAST = "expires_in_past"
    EXPIRED_BY_POLICY = "expired_by_policy"
    ALREADY_IMPORTED = "already_imported"


_ISO = "ISO-8601 with a time zone, e.g. 2026-03-05T10:00:00+08:00"

# `{number}` is the row's member number, `{detail}` what the check adds (a value, a line).
_MESSAGES = {
    RowProblem.HEADER: "{detail}",
    RowProblem.MALFORMED: "{detail}",
    RowProblem.NOT_UTF8: "{detail}",
    RowProblem.MISSING_MEMBER_NUMBER: "member_number is empty",
    RowProblem.INVALID_MEMBER_NUMBER: "member_number {detail}",
    RowProblem.DUPLICATE_MEMBER_NUMBER: "member number {number} is also on line {detail}",
    RowProblem.INVALID_DISPLAY_NAME: "display_name {detail}",
    RowProblem.MEMBER_NUMBER_TAKEN: (
        "member number {number} is already taken in this program by someone else"
        " (display name {detail})"
    ),
    RowProblem.UNKNOWN_MEMBER_NUMBER: (
        "no member number {number} in this program (import the members first)"
    ),
    RowProblem.MEMBERSHIP_CLOSED: "membership {number} is closed",
    RowProblem.MISSING_POINTS: "points is empty",
    RowProblem.INVALID_POINTS: (
        f"points must be a whole number from 1 to {MAX_POINTS}, not {{detail!r}}"
    ),
    RowProblem.INVALID_EARNED_AT: f"earned_at must be {_ISO}, not {{detail!r}}",
    RowProblem.EARNED_IN_FUTURE: "earned_at {detail} is in the future",
    RowProblem.INVALID_EXPIRES_AT: f"expires_at must be {_ISO}, not {{detail!r}}",
    RowProblem.EXPIRES_IN_PAST: "expires_at {detail} is in the past",
    RowProblem.EXPIRED_BY_POLICY: (
        "these points already expired on {detail} under the program's expiry policy"
        " (give expires_at to keep them)"
    ),
    RowProblem.ALREADY_IMPORTED: "member number {number} was already imported with other figures",
}


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    """Line of the file where the row starts (the header is line 1)."""
    problem: RowProblem
    message: str
    member_number: str | None = None

    @classmethod
    def of(
        cls, line: int, problem: RowProblem, *, member_number: str | None, detail: str | None
    ) -> RowError:
        message = _MESSAGES[problem].format(number=member_number, detail=detail)
        return cls(line, problem, message, member_number)


class ImportRejected(InvalidInput):
    """The file has bad rows: nothing was imported. `errors` are the first ones, by line."""

    def __init__(self, errors: list[RowError], error_count: int) -> None:
        super().__init__(
            f"{error_count} error(s) in the file; nothing was imported", field=("source",)
        )
        self.errors = errors
        self.error_count = error_count


class ErrorLog:
    """Counts every row error and keeps the first `limit` by line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._kept: list[RowError] = []

    def add(self, error: RowError) -> None:
        self.count += 1
        if len(self._kept) < self.limit:
            self._kept.append(error)

    def merge(self, errors: list[RowError], count: int) -> None:
        """Errors found in SQL: the first `limit` of them by line, out of `count`."""
        self.count += count
        self._kept = sorted([*self._kept, *errors], key=lambda error: error.line)[: self.limit]

    def reject_if_any(self) -> None:
        if self.count:
            raise ImportRejected(sorted(self._kept, key=lambda error: error.line), self.count)
