"""Pure input checks shared by use cases; each failure names its field."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

from alliance.errors import InvalidInput

CODE_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_POINTS = 1_000_000_000
"""Largest single movement: far above any real earn, far below BIGINT overflow."""


def clean_text(value: str, field: str, *, max_length: int, required: bool = True) -> str:
    """NFC-normalised, trimmed, no control characters."""
    text = unicodedata.normalize("NFC", value).strip()
    if required and not text:
        raise InvalidInput(f"{field} must not be empty", field=(field,))
    if len(text) > max_length:
        raise InvalidInput(f"{field} is longer than {max_length} characters", field=(field,))
    # isprintable() is False for every character of those categories (and for spaces
    # other than ' ', which are allowed): the per-character look is for such text only.
    if not text.isprintable() and any(
        unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn"} for char in text
    ):
        raise InvalidInput(f"{field} contains control or unassigned characters", field=(field,))
    return text


def clean_code(value: str, field: str) -> str:
    if not CODE_PATTERN.match(value):
        raise InvalidInput(
            f"{field} must be 1-40 lowercase letters, digits or inner dashes", field=(field,)
        )
    return value


def check_points(points: int, field: str = "points") -> int:
    if points <= 0:
        raise InvalidInput("points must be positive", field=(field,))
    if points > MAX_POINTS:
        raise InvalidInput(f"points must not exceed {MAX_POINTS}", field=(field,))
    return points


def check_idempotency_key(key: str) -> str:
    if not IDEMPOTENCY_KEY_PATTERN.match(key):
        raise InvalidInput(
            "idempotencyKey must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            field=("idempotencyKey",),
        )
    return key


def check_decimal(
    value: Decimal,
    field: str,
    *,
    maximum: Decimal,
    places: int,
    minimum_exclusive: Decimal | None = None,
    minimum: Decimal | None = None,
) -> Decimal:
    try:
        if not value.is_finite():
            raise InvalidOperation
        exponent = value.as_tuple().exponent
    except InvalidOperation:
        raise InvalidInput(f"{field} must be a finite decimal", field=(field,)) from None
    if not isinstance(exponent, int) or -exponent > places:
        raise InvalidInput(f"{field} allows at most {places} decimal places", field=(field,))
    if value > maximum:
        raise InvalidInput(f"{field} must be at most {maximum}", field=(field,))
    if minimum_exclusive is not None and value <= minimum_exclusive:
        raise InvalidInput(f"{field} must be above {minimum_exclusive}", field=(field,))
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{field} must be at least {minimum}", field=(field,))
    return value


def check_range(value: int, field: str, *, minimum: int, maximum: int) -> int:
    if not minimum <= value <= maximum:
        raise InvalidInput(f"{field} must be between {minimum} and {maximum}", field=(field,))
    return value
