"""Merges and the rest of the ledger: refunds, spends and history around a merge."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.errors import DomainError, InvalidInput
from alliance.identity.merge import merge_members, unlink_membership
from alliance.ledger.holds import authorize_hold, capture_hold, refund_hold
from alliance.ledger.reversal import reverse_purchase
from alliance.ledger.service import spend_points
from alliance.ledger.verify import verify_ledger
from alliance.members.queries import HistoryFilter, history_pages_by_member, memberships_by_id
from alliance.rules.earning import record_purchase
from alliance.rules.engine import Purchase
from alliance.rules.models import RuleKind
from alliance.rules.service import ClawbackPolicy, set_earning_policy
from alliance.rules.terms import TermsInput
from tests.database import corrupt
from tests.factories import (
    OPERATOR,
    backdated_rule,
    give_points,
    make_membership,
    make_program,
    member_actor,
    merchant_actor,
)
from tests.graphql.helpers import ok


async def test_refund_after_rehome_claws_back_from_the_moved_membership(db: Database) -> None:
    home, other = await make_program(db), await make_program(db)
    actor = merchant_actor(other.merchant_id)
    await backdated_rule(db, other, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
    await set_earning_policy(db, actor, program_id=other.id, clawback_policy=ClawbackPolicy.DEBT)
    survivor = await make_membership(db, home)
    absorbed = await make_membership(db, other)
    await record_purchase(db, actor, membership_id=absorbed.id, order_id="o-1",
                          purchase=Purchase(Decimal(100), datetime.now(UTC)),
                          currency="CNY")  # fmt: skip
    await spend_points(db, actor, membership_id=absorbed.id, points=80, reason="spent",
                       idempotency_key="s1")  # fmt: skip
    await merge_members(db, OPERATOR, survivor_id=survivor.member_id,
                        absorbed_id=absorbed.member_id, reason="dup",
                        idempotency_key="m")  # fmt: skip
    reversal = await reverse_purchase(db, actor, order_id="o-1", refund_id="r-1",
                                      amount=Decimal(100), currency="CNY")  # fmt: skip
    assert (reversal.taken, reversal.debt) == (20, 80)
    found = await memberships_by_id(db, OPERATOR, [absorbed.id])
    assert found[absorbed.id].member_id == survivor.member_id
    assert found[absorbed.id].debt == 80
    assert await verify_ledger(db) == []


async def _race_round(db: Database, round_: int) -> None:
    """A merge that re-homes a membership while 40 spends hit its account."""
    home, other = await make_program(db), await make_program(db)
    survivor = await make_membership(db, home)
    absorbed = await make_membership(db, other)
    for _ in range(5):
        await give_points(db, absorbed, other, 100)
    rng = random.Random(round_)

    async def spend(n: int) -> None:
        await asyncio.sleep(rng.random() * 0.02)
        with contextlib.suppress(DomainError):
            await spend_points(
                db, merchant_actor(other.merchant_id), membership_id=absorbed.id, points=3,
                reason="race", idempotency_key=f"r{round_}-{n}",
            )  # fmt: skip

    async def merge() -> None:
        await asyncio.sleep(0.01)
        await merge_members(db, OPERATOR, survivor_id=survivor.member_id,
                            absorbed_id=absorbed.member_id, reason="race",
                            idempotency_key=f"race{round_}")  # fmt: skip

    await asyncio.gather(merge(), *(spend(n) for n in range(40)))


async def test_rehome_under_concurrent_spends_keeps_every_invariant(db: Database) -> None:
    for round_ in range(4):
        await _race_round(db, round_)
    assert await verify_ledger(db) == []
    # Every posting of an account carries the account's ledger member, before and after.
    async with db.autocommit() as conn:
        stray = await conn.scalar(
            text(
                "SELECT count(*) FROM posting p JOIN account a ON a.id = p.account_id"
                " WHERE p.balance_after IS NOT NULL AND p.member_id <> a.member_id"
            )
        )
    assert stray == 0


async def test_a_merged_members_history_pages_through_every_ledger_member_newest_first(
    db: Database,
) -> None:
    """After merges a member's entries sit under several ledger members: each page is the
    newest of all of them, pages neither skip nor repeat, and the filters still apply."""
    programs = [await make_program(db) for _ in range(3)]
    memberships = [await make_membership(db, program) for program in programs]
    for n in range(1, 9):  # interleaved: every ledger member's entries alternate in time
        for membership, program in zip(memberships, programs, strict=True):
            await give_points(db, membership, program, n)
    survivor = memberships[0]
    for k, absorbed in enumerate(memberships[1:]):
        await merge_members(db, OPERATOR, survivor_id=survivor.member_id,
                            absorbed_id=absorbed.member_id, reason="dup",
                            idempotency_key=f"m{k}")  # fmt: skip

    async def every_page(filters: HistoryFilter) -> list[int]:
        seen: list[int] = []
        after = None
        while True:
            pages = await history_pages_by_member(db, OPERATOR, [survivor.member_id], first=5,
                                                  after=after, filters=filters)  # fmt: skip
            page = pages[survivor.member_id]
            seen += [entry.posting_id for entry in page.items]
            if not page.has_next_page:
                return seen
            after = seen[-1]

    everything = await every_page(HistoryFilter())
    assert len(everything) == 24
    assert everything == sorted(set(everything), reverse=True)
    one = await every_page(HistoryFilter(program_id=programs[2].id))
    assert len(one) == 8
    assert one == [entry for entry in everything if entry in set(one)]


async def test_survivor_sees_the_moved_membership_history(db: Database) -> None:
    home, other = await make_program(db), await make_program(db)
    survivor = await make_membership(db, home)
    absorbed = await make_membership(db, other)
    await give_points(db, survivor, home, 5)
    await give_points(db, absorbed, other, 7)
    await merge_members(db, OPERATOR, survivor_id=survivor.member_id,
                        absorbed_id=absorbed.member_id, reason="dup",
                        idempotency_key="m")  # fmt: skip
    pages = await history_pages_by_member(db, OPERATOR, [survivor.member_id], first=10,
                                          after=None, filters=HistoryFilter())  # fmt: skip
    assert sorted(e.points for e in pages[survivor.member_id].items) == [5, 7]
    # Through the moved membership's merchant app, the member sees its entries too.
    actor = member_actor(await _record(db, absorbed.id), other.merchant_id)
    data = await ok(
        db, actor,
        """{ viewer { member { transactions { edges { node { points } } } }
             membership { transactions { edges { node { points } } } } } }""",
    )  # fmt: skip
    member_entries = data["viewer"]["member"]["transactions"]["edges"]
    membership_entries = data["viewer"]["membership"]["transactions"]["edges"]
    assert [e["node"]["points"] for e in member_entries] == [7]
    assert [e["node"]["points"] for e in membership_entries] == [7]
    # Unlinked again: the history goes with the membership.
    unlinked = await unlink_membership(db, OPERATOR, membership_id=absorbed.id,
                                       reason="not the same", idempotency_key="u")  # fmt: skip
    pages = await history_pages_by_member(
        db, OPERATOR, [survivor.member_id, unlinked.to_member_id], first=10, after=None,
        filters=HistoryFilter(),
    )  # fmt: skip
    assert [e.points for e in pages[survivor.member_id].items] == [5]
    assert [e.points for e in pages[unlinked.to_member_id].items] == [7]
    assert await verify_ledger(db) == []


async def _record(db: Database, membership_id: int):  # type: ignore[no-untyped-def]
    return (await memberships_by_id(db, OPERATOR, [membership_id]))[membership_id]


async def _account(db: Database, membership_id: int) -> tuple[int, int]:
    row = await db.fetch_one(
        "SELECT balance, debt FROM account WHERE membership_id = %(m)s", {"m": membership_id}
    )
    assert row is not None
    return int(row[0]), int(row[1])


async def test_refund_after_a_fold_claws_back_from_the_survivors_account(db: Database) -> None:
    program = await make_program(db)
    actor = merchant_actor(program.merchant_id)
    await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
    await set_earning_policy(db, actor, program_id=program.id, clawback_policy=ClawbackPolicy.DEBT)
    survivor = await make_membership(db, program)
    absorbed = await make_membership(db, program)
    await give_points(db, survivor, program, 500)  # the survivor's own, expiring no sooner
    await record_purchase(db, actor, membership_id=absorbed.id, order_id="o-1",
                          purchase=Purchase(Decimal(100), datetime.now(UTC)),
                          currency="CNY")  # fmt: skip
    await spend_points(db, actor, membership_id=absorbed.id, points=30, reason="spent",
                       idempotency_key="s1")  # fmt: skip
    await merge_members(db, OPERATOR, survivor_id=survivor.member_id,
                        absorbed_id=absorbed.member_id, reason="dup",
                        idempotency_key="m")  # fmt: skip
    assert await _account(db, survivor.id) == (570, 0)
    reversal = await reverse_purchase(db, actor, order_id="o-1", refund_id="r-1",
                                      amount=Decimal(100), currency="CNY")  # fmt: skip
    # The order's 70 points left (carried by the fold) go first, then 30 of the survivor's
    # own lots (debt policy: what the member spent is taken from her other points).
    assert (reversal.membership_id, reversal.taken, reversal.debt) == (survivor.id, 100, 0)
    assert await _account(db, survivor.id) == (470, 0)
    assert await _account(db, absorbed.id) == (0, 0)
    carried = await db.fetch_one(
        "SELECT l.remaining FROM lot l JOIN account a ON a.id = l.account_id"
        " WHERE a.membership_id = %(m)s AND l.origin_transaction_id IS NOT NULL",
        {"m": survivor.id},
    )
    assert carried is not None
    assert carried[0] == 0  # the purchase's own points were taken first
    assert await verify_ledger(db) == []


async def test_refunds_follow_a_chain_of_folds_and_discount_refunds_too(db: Database) -> None:
    program = await make_program(db)
    actor = merchant_actor(program.merchant_id)
    first, second, third = [await make_membership(db, program) for _ in range(3)]
    await give_points(db, first, program, 300)
    hold = await authorize_hold(db, actor, membership_id=first.id, points=200, kind="discount",
                                reason="bill", idempotency_key="h")  # fmt: skip
    await capture_hold(db, actor, hold_id=hold.id)
    await refund_hold(db, actor, hold_id=hold.id, points=50, refund_id="r-1")  # before folds
    for n, (survivor, absorbed) in enumerate(((second, first), (third, second))):
        await merge_members(db, OPERATOR, survivor_id=survivor.member_id,
                            absorbed_id=absorbed.member_id, reason="dup",
                            idempotency_key=f"m{n}")  # fmt: skip
    assert await _account(db, third.id) == (150, 0)
    given = await refund_hold(db, actor, hold_id=hold.id, points=100, refund_id="r-2")
    assert given.balance_after == 250
    assert await _account(db, third.id) == (250, 0)
    assert await _account(db, first.id) == (0, 0)
    # Refunds before and after the folds count together: 50 + 100 of the 200 spent.
    with pytest.raises(InvalidInput):
        await refund_hold(db, actor, hold_id=hold.id, points=51, refund_id="r-3")
    await refund_hold(db, actor, hold_id=hold.id, points=50, refund_id="r-4")
    assert await verify_ledger(db) == []


async def test_migration_0013_backfill_finds_the_folds_and_carried_lots(db: Database) -> None:
    """What 0013 reconstructs for folds made before it equals what folds record now."""
    import importlib

    backfill = importlib.import_module("migrations.versions.0013_folds")._BACKFILL
    program = await make_program(db)
    first, second, third = [await make_membership(db, program) for _ in range(3)]
    for membership, points in ((first, 70), (second, 30)):
        await give_points(db, membership, program, points)
        await give_points(db, membership, program, points + 1)
    for n, (survivor, absorbed) in enumerate(((second, first), (third, second))):
        await merge_members(db, OPERATOR, survivor_id=survivor.member_id,
                            absorbed_id=absorbed.member_id, reason="dup",
                            idempotency_key=f"m{n}")  # fmt: skip
    folds = "SELECT id, folded_into_id FROM account ORDER BY id"
    origins = "SELECT id, origin_transaction_id FROM lot ORDER BY id"
    before = (await db.fetch_all(folds), await db.fetch_all(origins))
    assert sum(1 for row in before[0] if row[1] is not None) == 2
    assert sum(1 for row in before[1] if row[1] is not None) == 6  # 4 lots, then 2 again
    async with db.autocommit() as conn:
        await conn.execute(text("UPDATE account SET folded_into_id = NULL"))
        await conn.execute(text("UPDATE lot SET origin_transaction_id = NULL"))
        await conn.exec_driver_sql(backfill)
    assert (await db.fetch_all(folds), await db.fetch_all(origins)) == before


@pytest.mark.parametrize(
    "corruption",
    [
        "UPDATE account SET balance = 1 WHERE folded_into_id IS NOT NULL",
        "UPDATE membership SET status = 'active' WHERE id IN"
        " (SELECT membership_id FROM account WHERE folded_into_id IS NOT NULL)",
        "UPDATE account SET folded_into_id = id WHERE folded_into_id IS NOT NULL",
    ],
)
async def test_verify_finds_broken_folds(db: Database, corruption: str) -> None:
    program = await make_program(db)
    survivor, absorbed = [await make_membership(db, program) for _ in range(2)]
    await give_points(db, absorbed, program, 5)
    await merge_members(db, OPERATOR, survivor_id=survivor.member_id,
                        absorbed_id=absorbed.member_id, reason="dup",
                        idempotency_key="m")  # fmt: skip
    assert await verify_ledger(db) == []
    await corrupt(db, corruption)
    found = {violation.check for violation in await verify_ledger(db)}
    async with db.autocommit() as conn:  # consistent again for the teardown check
        await conn.execute(text(
            "UPDATE account SET balance = 0, folded_into_id = NULL WHERE id IN"
            " (SELECT id FROM account WHERE membership_id = :m)"), {"m": absorbed.id})  # fmt: skip
        await conn.execute(text("UPDATE membership SET status = 'closed' WHERE id = :m"),
                           {"m": absorbed.id})  # fmt: skip
    assert "folded_accounts_are_empty" in found
