"""Statements from a period's obligations: gross lines, bilateral and multilateral nets.

Each gross line (one debtor, one creditor, one kind of obligation) is rounded to the
cent, half to even, once; the debtor's statement shows it as payable and the
creditor's as receivable, so every rounded cent leaves one party and reaches another
and the nets of all parties, the alliance included, sum to exactly zero. What
rounding moved is each statement's `rounding` line (exact net less rounded net).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from alliance.settlement.models import LineKind

CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Group:
    """The sum of a period's obligations of one kind from one debtor to one creditor."""

    kind: str
    debtor: int
    creditor: int | None
    """None: the alliance."""
    obligations: int
    points: int
    exact: Decimal

    @property
    def rounded(self) -> Decimal:
        return self.exact.quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass(slots=True)
class Line:
    kind: LineKind
    counterparty: int | None
    exact: Decimal
    amount: Decimal
    obligation_kind: str | None = None
    debtor: int | None = None
    creditor: int | None = None
    obligations: int = 0
    points: int = 0


@dataclass(slots=True)
class Draft:
    party: int | None
    """A merchant, or None for the alliance."""
    lines: list[Line] = field(default_factory=list)
    receivable: Decimal = Decimal(0)
    payable: Decimal = Decimal(0)
    rounding: Decimal = Decimal(0)

    @property
    def net(self) -> Decimal:
        return self.receivable - self.payable


def _key(party: int | None) -> tuple[int, int]:
    return (0, 0) if party is None else (1, party)


def draft_statements(groups: list[Group]) -> list[Draft]:
    """One statement per party that owes or is owed anything, the alliance's first."""
    gross: dict[int | None, list[Line]] = defaultdict(list)
    for g in sorted(groups, key=lambda g: (_key(g.debtor), _key(g.creditor), g.kind)):
        common: dict[str, Any] = {
            "obligation_kind": g.kind,
            "debtor": g.debtor,
            "creditor": g.creditor,
            "obligations": g.obligations,
            "points": g.points,
        }
        gross[g.debtor].append(Line(LineKind.PAYABLE, g.creditor, g.exact, g.rounded, **common))
        gross[g.creditor].append(Line(LineKind.RECEIVABLE, g.debtor, g.exact, g.rounded, **common))
    drafts = []
    for party in sorted(gross, key=_key):
        draft = Draft(party)
        lines = sorted(
            gross[party],
            key=lambda line: (
                line.kind != LineKind.RECEIVABLE,
                _key(line.counterparty),
                line.obligation_kind or "",
            ),
        )
        draft.lines.extend(lines)
        exact_net = Decimal(0)
        by_counterparty: dict[int | None, list[Line]] = defaultdict(list)
        for line in lines:
            sign = 1 if line.kind is LineKind.RECEIVABLE else -1
            exact_net += sign * line.exact
            if line.kind is LineKind.RECEIVABLE:
                draft.receivable += line.amount
            else:
                draft.payable += line.amount
            by_counterparty[line.counterparty].append(line)
        for counterparty in sorted(by_counterparty, key=_key):
            signed = [
                (1 if x.kind is LineKind.RECEIVABLE else -1, x)
                for x in by_counterparty[counterparty]
            ]
            draft.lines.append(
                Line(
                    LineKind.BILATERAL_NET,
                    counterparty,
                    sum((s * x.exact for s, x in signed), Decimal(0)),
                    sum((s * x.amount for s, x in signed), Decimal(0)),
                )
            )
        draft.rounding = exact_net - draft.net
        draft.lines.append(
            Line(
                LineKind.ROUNDING,
                None,
                draft.rounding,
                draft.rounding.quantize(CENT, rounding=ROUND_HALF_EVEN),
            )
        )
        draft.lines.append(Line(LineKind.MULTILATERAL_NET, None, exact_net, draft.net))
        drafts.append(draft)
    return drafts
