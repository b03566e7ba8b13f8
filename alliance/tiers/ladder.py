"""A tier ladder as a value: validating a new one, and reading tiers off it. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from alliance.errors import InvalidInput
from alliance.tiers.models import TierBasis
from alliance.validation import check_decimal, check_range, clean_code, clean_text

MAX_TIERS = 10
MAX_BENEFITS = 20
MAX_THRESHOLD = Decimal(10**12)
MAX_MULTIPLIER = Decimal(10)
WINDOW_DAYS = (1, 3650)
GRACE_DAYS = (0, 365)
THRESHOLD_PLACES = {TierBasis.SPEND: 2, TierBasis.POINTS: 0}
"""Spend is money (cents); points are whole."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TierInput:
    """One rung of a ladder being set; its rank is its place in the list (0: entry tier)."""

    code: str
    name: str
    threshold: Decimal
    multiplier: Decimal = Decimal(1)
    benefits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TierRecord:
    id: int
    ladder_id: int
    program_id: int
    code: str
    name: str
    rank: int
    threshold: Decimal
    multiplier: Decimal
    benefits: tuple[str, ...]
    ladder_version: int

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TierRecord:
        id, ladder_id, program_id, code, name, rank, threshold, multiplier, benefits, version = row
        return cls(id, ladder_id, program_id, code, name, rank, plain(threshold),
                   plain(multiplier), tuple(benefits), version)  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "rank": self.rank,
                "threshold": str(self.threshold), "multiplier": str(self.multiplier),
                "benefits": list(self.benefits)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Ladder:
    """One version of a program's ladder: its qualification policy and its tiers."""

    id: int
    program_id: int
    version: int
    basis: TierBasis
    window_days: int
    grace_days: int
    created_at: datetime
    tiers: tuple[TierRecord, ...]
    """By rank: tiers[0] is the entry tier."""

    def __post_init__(self) -> None:
        assert [tier.rank for tier in self.tiers] == list(range(len(self.tiers))), self.tiers

    @property
    def multiplies(self) -> bool:
        """Whether some tier earns more than the base."""
        return any(tier.multiplier > 1 for tier in self.tiers)

    @property
    def entry(self) -> TierRecord:
        return self.tiers[0]

    def held(self, code: str | None, rank: int = 0) -> TierRecord:
        """The tier that stands on this ladder for a tier given as (code, rank), maybe of an
        older version: the same code, else the highest tier ranked no higher. None: the
        entry tier. The rule of `tier_held` in migrations/sql/0004_tiers.sql."""
        for tier in self.tiers:
            if tier.code == code:
                return tier
        return self.tiers[min(rank, len(self.tiers) - 1)] if code is not None else self.entry

    def multiplier(self, code: str | None, rank: int = 0) -> Decimal:
        """The earning multiplier of a member whose tier is (code, rank)."""
        return self.held(code, rank).multiplier

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "basis": self.basis.value,
                "window_days": self.window_days, "grace_days": self.grace_days,
                "tiers": [tier.as_json() for tier in self.tiers]}  # fmt: skip

    def same_as(
        self, basis: TierBasis, window_days: int, grace_days: int, tiers: Sequence[TierInput]
    ) -> bool:
        """Whether setting this ladder again would change nothing."""
        policy = (basis, window_days, grace_days)
        rungs = [(t.code, t.name, t.threshold, t.multiplier, t.benefits) for t in tiers]
        return (self.basis, self.window_days, self.grace_days) == policy and [
            (t.code, t.name, t.threshold, t.multiplier, t.benefits) for t in self.tiers
        ] == rungs


def plain(value: Decimal) -> Decimal:
    """Without the trailing zeros of the column's scale: 1000.0000 reads 1000, 1.50 reads 1.5."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def _at(path: tuple[str, ...], check: Callable[[], T]) -> T:
    """Run a field check, reporting its failure under `path` (e.g. tiers.2.threshold)."""
    try:
        return check()
    except InvalidInput as error:
        raise InvalidInput(error.message, field=path) from None


def check_ladder(
    basis: TierBasis, window_days: int, grace_days: int, tiers: Sequence[TierInput]
) -> tuple[TierInput, ...]:
    """The ladder cleaned, or the first rule it breaks (with its field path)."""
    check_range(window_days, "windowDays", minimum=WINDOW_DAYS[0], maximum=WINDOW_DAYS[1])
    check_range(grace_days, "graceDays", minimum=GRACE_DAYS[0], maximum=GRACE_DAYS[1])
    if not tiers:
        raise InvalidInput("a ladder needs at least its entry tier", field=("tiers",))
    if len(tiers) > MAX_TIERS:
        raise InvalidInput(f"a ladder has at most {MAX_TIERS} tiers", field=("tiers",))
    cleaned: list[TierInput] = []
    for rank, tier in enumerate(tiers):
        cleaned.append(_check_tier(basis, rank, tier, cleaned))
    return tuple(cleaned)


def _check_tier(
    basis: TierBasis, rank: int, tier: TierInput, below: Sequence[TierInput]
) -> TierInput:
    path = ("tiers", str(rank))
    code = _at((*path, "code"), lambda: clean_code(tier.code, "code"))
    if any(other.code == code for other in below):
        raise InvalidInput(f"tier code {code} is used twice", field=(*path, "code"))
    name = _at((*path, "name"), lambda: clean_text(tier.name, "name", max_length=40))
    threshold = _at((*path, "threshold"), lambda: check_decimal(
        tier.threshold, "threshold", minimum=Decimal(0), maximum=MAX_THRESHOLD,
        places=THRESHOLD_PLACES[basis]))  # fmt: skip
    if rank == 0 and threshold != 0:
        raise InvalidInput("the entry tier's threshold is 0", field=(*path, "threshold"))
    if rank > 0 and threshold <= below[-1].threshold:
        raise InvalidInput(
            "thresholds must increase strictly with rank", field=(*path, "threshold")
        )
    multiplier = _at((*path, "multiplier"), lambda: check_decimal(
        tier.multiplier, "multiplier", minimum=Decimal(1), maximum=MAX_MULTIPLIER,
        places=2))  # fmt: skip
    if len(tier.benefits) > MAX_BENEFITS:
        raise InvalidInput(f"at most {MAX_BENEFITS} benefits", field=(*path, "benefits"))
    benefits: list[str] = []
    for n, benefit in enumerate(tier.benefits):
        try:
            benefits.append(clean_text(benefit, "benefit", max_length=200))
        except InvalidInput as error:
            raise InvalidInput(error.message, field=(*path, "benefits", str(n))) from None
    return TierInput(code, name, threshold, multiplier, tuple(benefits))
