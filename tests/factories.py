"""Factories: plain async functions with defaults, built on the domain's own use cases."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.ledger.service import Movement, award_points
from alliance.members.queries import MembershipRecord, memberships_by_id
from alliance.members.service import enroll_member, open_membership
from alliance.programs.models import ExpiryPolicy
from alliance.programs.queries import MerchantRecord, ProgramRecord
from alliance.programs.service import create_merchant, create_program
from alliance.rules.models import EarningRule, RuleKind
from alliance.rules.service import forget_cached
from alliance.rules.terms import TermsInput, terms_json
from alliance.tiers.ladder import Ladder, TierInput
from alliance.tiers.models import TierBasis
from alliance.tiers.service import TierMove, record_activity, set_tier_ladder

_sequence = itertools.count(1)

OPERATOR = Actor(Role.OPERATOR, "client:test-operator", "test-operator")
AUDITOR = Actor(Role.AUDITOR, "client:test-auditor", "test-auditor")
ALLIANCE_FINANCE = Actor(Role.FINANCE, "client:test-finance", "test-finance")


def merchant_actor(merchant: MerchantRecord | int) -> Actor:
    merchant_id = merchant if isinstance(merchant, int) else merchant.id
    client = f"test-merchant-{merchant_id}"
    return Actor(Role.MERCHANT, f"client:{client}", client, merchant_id=merchant_id)


def finance_actor(merchant: MerchantRecord | int) -> Actor:
    merchant_id = merchant if isinstance(merchant, int) else merchant.id
    client = f"test-finance-{merchant_id}"
    return Actor(Role.FINANCE, f"client:{client}", client, merchant_id=merchant_id)


def member_actor(membership: MembershipRecord, merchant_id: int) -> Actor:
    client = f"test-merchant-{merchant_id}"
    return Actor(
        Role.MEMBER,
        f"member:{membership.member_id}",
        client,
        merchant_id=merchant_id,
        member_id=membership.member_id,
        membership_id=membership.id,
    )


async def make_merchant(db: Database, **overrides: Any) -> MerchantRecord:
    n = next(_sequence)
    fields: dict[str, Any] = {"code": f"merchant-{n}", "name": f"Merchant {n}"} | overrides
    return await create_merchant(db, OPERATOR, **fields)


async def make_program(
    db: Database, merchant: MerchantRecord | None = None, **overrides: Any
) -> ProgramRecord:
    merchant = merchant or await make_merchant(db)
    n = next(_sequence)
    fields: dict[str, Any] = {
        "code": f"program-{n}",
        "name": f"Program {n}",
        "unit_name": "points",
        "point_value": Decimal("0.01"),
        "expiry_policy": ExpiryPolicy.NEVER,
    } | overrides
    return await create_program(db, OPERATOR, merchant_id=merchant.id, **fields)


async def make_membership(
    db: Database, program: ProgramRecord | None = None, **overrides: Any
) -> MembershipRecord:
    program = program or await make_program(db)
    n = next(_sequence)
    fields: dict[str, Any] = {"member_number": f"M{n:06d}", "display_name": f"Member {n}"}
    return await enroll_member(
        db, merchant_actor(program.merchant_id), program_id=program.id, **(fields | overrides)
    )


async def give_points(
    db: Database, membership: MembershipRecord, program: ProgramRecord, points: int
) -> Movement:
    return await award_points(
        db,
        merchant_actor(program.merchant_id),
        membership_id=membership.id,
        points=points,
        reason="test award",
        idempotency_key=f"give-{next(_sequence)}",
    )


async def backdated_rule(
    db: Database,
    program: ProgramRecord,
    code: str,
    kind: RuleKind,
    terms: TermsInput,
    *,
    days: int = 40,
    priority: int = 0,
) -> int:
    """A rule version in force since `days` ago, for tests of earns in the past.

    The domain only writes versions that take effect ahead (history is never
    rewritten); tests of past days and periods write one directly, as a migration
    of an old system's rules would."""
    async with db.transaction() as session:
        rule_id = await session.scalar(
            insert(EarningRule)
            .values(program_id=program.id, code=code, version=1, kind=kind.value, name=code,
                    params=terms_json(kind, terms), priority=priority,
                    valid_from=datetime.now(UTC) - timedelta(days=days), created_by="test")
            .returning(EarningRule.id)
        )  # fmt: skip
    forget_cached()
    assert rule_id is not None
    return rule_id


# -- tiers -----------------------------------------------------------------------------

STANDARD_TIERS = (
    TierInput("regular", "普通", Decimal(0)),
    TierInput("gold", "黄金", Decimal(1000), Decimal("1.5"), ("priority seating",)),
    TierInput("platinum", "白金", Decimal(5000), Decimal(2), ("priority seating", "free dessert")),
)


async def make_ladder(
    db: Database,
    program: ProgramRecord,
    *,
    tiers: tuple[TierInput, ...] = STANDARD_TIERS,
    basis: TierBasis = TierBasis.SPEND,
    window_days: int = 365,
    grace_days: int = 30,
) -> Ladder:
    return await set_tier_ladder(
        db, merchant_actor(program.merchant_id), program_id=program.id, basis=basis,
        window_days=window_days, grace_days=grace_days, tiers=tiers,
    )  # fmt: skip


async def qualify(
    db: Database,
    membership: MembershipRecord,
    program: ProgramRecord,
    *,
    spend: Decimal | int = 0,
    points: int = 0,
    occurred_at: datetime | None = None,
) -> list[TierMove]:
    """Qualifying activity on a ledger transaction of its own (a 1-point award)."""
    movement = await give_points(db, membership, program, 1)
    return await record_activity(
        db, membership_id=membership.id, transaction_id=movement.transaction_id,
        occurred_at=occurred_at or datetime.now(UTC), spend=Decimal(spend), points=points,
    )  # fmt: skip


async def link_membership(
    db: Database, program: ProgramRecord, member_id: int, **overrides: Any
) -> MembershipRecord:
    """A membership of an existing alliance member in another merchant's program, as a
    verified identity link makes one (the linking flow itself is tested on its own)."""
    n = next(_sequence)
    async with db.transaction() as session:
        membership = await open_membership(
            session, member_id=member_id, program_id=program.id,
            member_number=overrides.get("member_number", f"L{n:06d}"),
        )  # fmt: skip
        membership_id = membership.id
    found = await memberships_by_id(db, OPERATOR, [membership_id])
    return found[membership_id]
