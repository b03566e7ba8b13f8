"""clean_text: the printable fast path decides exactly as the per-character look."""

from __future__ import annotations

import pytest

from alliance.errors import InvalidInput
from alliance.validation import clean_text


@pytest.mark.parametrize(
    "text",
    ["plain", "咖啡 latte", "a\u3000b", "a\u00a0b", "line\u2028sep", "emoji 🍜", "e\u0301"],
)
def test_printable_and_spaced_text_is_kept(text: str) -> None:
    assert clean_text(text, "name", max_length=64) == text.strip().replace("e\u0301", "é")


@pytest.mark.parametrize(
    "text",
    ["nul\x00", "tab\tinside", "zero\u200bwidth", "bidi\u202eoverride", "private\ue000",
     "unassigned\U000e0fff", "bom\ufeffmark"],
)  # fmt: skip
def test_control_format_private_and_unassigned_characters_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="control or unassigned"):
        clean_text(text, "name", max_length=64)
