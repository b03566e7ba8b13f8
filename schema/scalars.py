"""Scalars: points are 64-bit integers, beyond GraphQL's 32-bit Int."""

from __future__ import annotations

from typing import NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

MAX_BIGINT = 2**63 - 1

BigInt = NewType("BigInt", int)


def _parse_bigint(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("BigInt cannot represent a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    else:
        raise ValueError(f"BigInt cannot represent {value!r}")
    if not -MAX_BIGINT - 1 <= number <= MAX_BIGINT:
        raise ValueError("BigInt is outside the signed 64-bit range")
    return number


SCALARS: dict[object, ScalarDefinition] = {
    BigInt: strawberry.scalar(
        name="BigInt",
        description="A signed 64-bit integer (points). Serialised as a JSON number.",
        serialize=int,
        parse_value=_parse_bigint,
    )
}
