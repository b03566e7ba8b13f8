"""Erasure waits for settlement: a member with cross-merchant obligations is erased only
once their periods are closed and both parties' statements are paid (the policy's
`erase_requires_settlement`)."""

from __future__ import annotations

import pytest

from alliance.db.engine import Database
from alliance.errors import ObligationsUnsettled
from alliance.exchange.service import exchange_points
from alliance.identity.privacy import erase_member
from alliance.identity.service import set_privacy_policy
from alliance.settlement import service
from tests.exchange.helpers import keys, make_alliance, rate
from tests.factories import ALLIANCE_FINANCE, OPERATOR, finance_actor
from tests.settlement.helpers import settle


async def test_erasure_waits_until_the_members_obligations_are_paid(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await set_privacy_policy(db, OPERATOR, erase_requires_settlement=True)
    a = await make_alliance(db)
    await rate(db, a.programs[0], a.programs[1], "1")
    await exchange_points(
        db,
        a.member,
        from_membership_id=a.memberships[0].id,
        to_membership_id=a.memberships[1].id,
        points=100,
        idempotency_key=next(keys),
    )
    member_id = a.memberships[0].member_id
    with pytest.raises(ObligationsUnsettled):
        await erase_member(db, OPERATOR, member_id=member_id)
    await settle(db, monkeypatch)
    statements = await db.fetch_all("SELECT id, merchant_id FROM settlement_statement")
    for statement_id, merchant_id in statements:
        await service.issue_statement(db, ALLIANCE_FINANCE, statement_id=statement_id)
        await service.confirm_statement(db, finance_actor(merchant_id), statement_id=statement_id)
    with pytest.raises(ObligationsUnsettled):  # confirmed is not paid
        await erase_member(db, OPERATOR, member_id=member_id)
    for statement_id, _ in statements:
        await service.mark_statement_paid(
            db,
            ALLIANCE_FINANCE,
            statement_id=statement_id,
            payment_reference=f"wire {statement_id}",
        )
    done = await erase_member(db, OPERATOR, member_id=member_id)
    assert done.member_id == member_id
