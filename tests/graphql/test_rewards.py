"""Rewards over GraphQL: manage the catalog, browse it, redeem, use a coupon, give points."""

from __future__ import annotations

from typing import Any

from alliance.db.engine import Database
from tests.factories import give_points, make_membership, make_program, member_actor, merchant_actor
from tests.graphql.helpers import gid, ok

CREATE = """mutation($input: CreateRewardInput!) { createReward(input: $input) {
  reward { id version kind pointsPrice cashPrice stock limitPeriod imageUrls }
  userErrors { code field } } }"""
UPDATE = """mutation($input: UpdateRewardInput!) { updateReward(input: $input) {
  reward { version pointsPrice stock } userErrors { code field } } }"""
BROWSE = """query($p: ID!, $after: String, $sort: RewardSort!) { rewards(programId: $p,
  first: 2, after: $after, sort: $sort) { edges { cursor node { name pointsPrice canAfford
  program { id } } } pageInfo { hasNextPage endCursor } } }"""
RESERVE = """mutation($m: ID!, $r: ID!, $k: String!) { reserveReward(input: {membershipId: $m,
  rewardId: $r, idempotencyKey: $k}) { redemption { id status points reward { name }
  hold { status points } membership { balance { points held } } } replayed
  userErrors { code field } } }"""
FULFIL = """mutation($r: ID!) { fulfilRedemption(input: {redemptionId: $r}) {
  redemption { status fulfilment coupon { code status } } userErrors { code field } } }"""
REDEEM = """mutation($c: String!) { redeemCoupon(input: {code: $c, store: "Store 9"}) {
  redemption { status coupon { status usedStore } membership { balance { points held } } }
  userErrors { code field } } }"""
CANCEL = """mutation($r: ID!) { cancelRedemption(input: {redemptionId: $r}) {
  redemption { status } userErrors { code field } } }"""


def _terms(name: str, price: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "COUPON", "name": name, "pointsPrice": price, **extra}


async def test_catalog_redemption_and_coupon(db: Database) -> None:
    program = await make_program(db)
    merchant = merchant_actor(program.merchant_id)
    pid = gid("Program", program.id)
    created = await ok(db, merchant, CREATE, {"input": {
        "programId": pid, "code": "tea", "stock": 5,
        "terms": _terms("Tea", 120, cashPrice="9.90",
                        limitPerPeriod=1, limitPeriod="DAY",
                        imageUrls=["https://img.example/tea.png"])}})  # fmt: skip
    assert created["createReward"]["userErrors"] == []
    reward = created["createReward"]["reward"]
    assert (reward["version"], reward["kind"], reward["stock"], reward["limitPeriod"]) == (
        1, "COUPON", 5, "DAY")  # fmt: skip
    for n, price in enumerate((50, 300, 80)):
        await ok(db, merchant, CREATE, {"input": {"programId": pid, "code": f"r{n}",
                                                  "terms": _terms(f"R{n}", price)}})  # fmt: skip
    bad = await ok(db, merchant, CREATE, {"input": {"programId": pid, "code": "bad",
                                                    "terms": _terms("Bad", 0)}})  # fmt: skip
    assert bad["createReward"]["userErrors"] == [
        {"code": "INVALID_INPUT", "field": ["input", "pointsPrice"]}]  # fmt: skip
    updated = await ok(db, merchant, UPDATE, {"input": {
        "rewardId": reward["id"], "addStock": 1,
        "terms": _terms("Tea", 100, limitPerPeriod=1, limitPeriod="DAY")}})  # fmt: skip
    assert updated["updateReward"]["reward"] == {"version": 2, "pointsPrice": 100, "stock": 6}

    membership = await make_membership(db, program)
    await give_points(db, membership, program, 250)
    member = member_actor(membership, program.merchant_id)
    pages: list[list[tuple[str, int, bool | None]]] = []
    after = None
    while True:
        data = await ok(db, member, BROWSE, {"p": pid, "after": after, "sort": "PRICE_ASC"})
        connection = data["rewards"]
        pages.append([(e["node"]["name"], e["node"]["pointsPrice"], e["node"]["canAfford"])
                      for e in connection["edges"]])  # fmt: skip
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert pages == [
        [("R0", 50, True), ("R2", 80, True)],
        [("Tea", 100, True), ("R1", 300, False)],
    ]

    mid = gid("Membership", membership.id)
    reserved = await ok(db, member, RESERVE, {"m": mid, "r": reward["id"], "k": "app-1"})
    payload = reserved["reserveReward"]
    redemption = payload["redemption"]
    assert (redemption["status"], redemption["points"], payload["replayed"]) == (
        "RESERVED", 100, False)  # fmt: skip
    assert redemption["hold"] == {"status": "authorized", "points": 100}
    assert redemption["membership"]["balance"] == {"points": 250, "held": 100}
    again = await ok(db, member, RESERVE, {"m": mid, "r": reward["id"], "k": "app-1"})
    assert again["reserveReward"]["replayed"] is True
    limited = await ok(db, member, RESERVE, {"m": mid, "r": reward["id"], "k": "app-2"})
    assert limited["reserveReward"]["userErrors"] == [
        {"code": "LIMIT_REACHED", "field": ["input", "rewardId"]}]  # fmt: skip

    fulfilled = await ok(db, merchant, FULFIL, {"r": redemption["id"]})
    coupon = fulfilled["fulfilRedemption"]["redemption"]["coupon"]
    assert coupon["status"] == "issued"
    as_member = await ok(db, member, "query($id: ID!) { node(id: $id) { ... on Redemption {"
                         " status coupon { code } } } }", {"id": redemption["id"]})  # fmt: skip
    assert as_member["node"] == {"status": "FULFILLED", "coupon": {"code": coupon["code"]}}
    used = await ok(db, merchant, REDEEM, {"c": coupon["code"]})
    assert used["redeemCoupon"]["redemption"] == {
        "status": "COMPLETED", "coupon": {"status": "used", "usedStore": "Store 9"},
        "membership": {"balance": {"points": 150, "held": 0}}}  # fmt: skip
    twice = await ok(db, merchant, REDEEM, {"c": coupon["code"]})
    assert twice["redeemCoupon"]["userErrors"] == [
        {"code": "INVALID_TRANSITION", "field": ["input", "code"]}]  # fmt: skip
    late = await ok(db, merchant, CANCEL, {"r": redemption["id"]})
    assert late["cancelRedemption"]["userErrors"] == [
        {"code": "INVALID_TRANSITION", "field": ["input", "redemptionId"]}]  # fmt: skip
    listed = await ok(db, member, "query($m: ID!) { redemptions(membershipId: $m) {"
                      " edges { node { status } } } }", {"m": mid})  # fmt: skip
    assert [e["node"]["status"] for e in listed["redemptions"]["edges"]] == ["COMPLETED"]


async def test_can_afford_costs_the_same_statements_for_any_page(db: Database) -> None:
    program = await make_program(db)
    merchant = merchant_actor(program.merchant_id)
    pid = gid("Program", program.id)
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 100)
    member = member_actor(membership, program.merchant_id)
    query = """query($p: ID!, $n: Int!) { rewards(programId: $p, first: $n) { edges { node {
      canAfford program { name } } } } }"""
    counts: list[int] = []
    for total in (2, 12):
        for n in range(total - (2 if counts else 0)):
            new = {"programId": pid, "code": f"c{total}-{n}", "terms": _terms("x", 10 * (n + 1))}
            await ok(db, merchant, CREATE, {"input": new})
        with db.count_statements() as counter:
            data = await ok(db, member, query, {"p": pid, "n": total})
        assert len(data["rewards"]["edges"]) == total
        counts.append(counter.count)
    assert counts[0] == counts[1]


async def test_gifts_over_graphql(db: Database) -> None:
    program = await make_program(db)
    merchant = merchant_actor(program.merchant_id)
    sender = await make_membership(db, program)
    recipient = await make_membership(db, program)
    await give_points(db, sender, program, 100)
    member = member_actor(sender, program.merchant_id)
    gift = """mutation($input: GiftPointsInput!) { giftPoints(input: $input) {
      entry { points balanceAfter kind } replayed userErrors { code field } } }"""
    base = {"fromMembershipId": gid("Membership", sender.id), "points": 30,
            "toMemberNumber": recipient.member_number, "idempotencyKey": "g"}  # fmt: skip
    off = await ok(db, member, gift, {"input": base})
    assert off["giftPoints"]["userErrors"] == [
        {"code": "NOT_AVAILABLE", "field": ["input", "fromMembershipId"]}]  # fmt: skip
    policy = await ok(db, merchant, """mutation($p: ID!) { setGiftPolicy(input: {programId: $p,
      enabled: true, maxPointsPerGift: 50, dailyLimitPoints: 80}) {
      giftPolicy { enabled maxPointsPerGift dailyLimitPoints } userErrors { code } } }""",
                      {"p": gid("Program", program.id)})  # fmt: skip
    assert policy["setGiftPolicy"]["giftPolicy"] == {
        "enabled": True, "maxPointsPerGift": 50, "dailyLimitPoints": 80}  # fmt: skip
    sent = await ok(db, member, gift, {"input": base})
    assert sent["giftPoints"] == {"entry": {"points": -30, "balanceAfter": 70, "kind": "GIFT"},
                                  "replayed": False, "userErrors": []}  # fmt: skip
    read = await ok(db, member_actor(recipient, program.merchant_id),
                    "{ viewer { membership { balance { points } transactions {"
                    " edges { node { kind points } } } } } }")  # fmt: skip
    membership = read["viewer"]["membership"]
    assert membership["balance"] == {"points": 30}
    assert membership["transactions"]["edges"][0]["node"] == {"kind": "GIFT", "points": 30}


async def test_redemptions_and_their_relations_cost_the_same_statements_for_any_page(
    db: Database,
) -> None:
    from tests.rewards.helpers import make_reward, reserve

    program = await make_program(db)
    merchant = merchant_actor(program.merchant_id)
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 10_000)
    reward = await make_reward(db, program, stock=None)
    query = """query($m: ID!, $n: Int!) { redemptions(membershipId: $m, first: $n) { edges {
      node { status reward { name canAfford } coupon { code } hold { status }
             membership { memberNumber } } } } }"""
    counts = []
    for wanted in (2, 12):
        while True:
            listed = await ok(db, merchant, query, {"m": gid("Membership", membership.id),
                                                    "n": wanted})  # fmt: skip
            if len(listed["redemptions"]["edges"]) == wanted:
                break
            red = (await reserve(db, program, reward, membership)).redemption
            await ok(db, merchant, FULFIL, {"r": gid("Redemption", red.id)})
        with db.count_statements() as counter:
            await ok(db, merchant, query, {"m": gid("Membership", membership.id), "n": wanted})
        counts.append(counter.count)
    assert counts[0] == counts[1]


async def test_the_fulfilment_queue_and_the_version_reserved_under(db: Database) -> None:
    from tests.rewards.helpers import make_reward, reserve

    program = await make_program(db)
    merchant = merchant_actor(program.merchant_id)
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 1000)
    reward = await make_reward(db, program, stock=None)
    first = (await reserve(db, program, reward, membership)).redemption
    await ok(db, merchant, UPDATE, {"input": {"rewardId": gid("Reward", reward.id),
                                              "terms": _terms("Tea", 100)}})  # fmt: skip
    second = (await reserve(db, program, reward, membership)).redemption
    await ok(db, merchant, FULFIL, {"r": gid("Redemption", first.id)})
    query = """query($r: ID!, $s: RedemptionStatus) { rewardRedemptions(rewardId: $r,
      status: $s) { edges { node { id status rewardVersion } } } }"""
    queue = await ok(db, merchant, query, {"r": gid("Reward", reward.id), "s": "RESERVED"})
    assert [e["node"] for e in queue["rewardRedemptions"]["edges"]] == [
        {"id": gid("Redemption", second.id), "status": "RESERVED", "rewardVersion": 2}]  # fmt: skip
    everything = await ok(db, merchant, query, {"r": gid("Reward", reward.id), "s": None})
    assert [e["node"]["rewardVersion"] for e in everything["rewardRedemptions"]["edges"]] == [
        1, 2]  # fmt: skip
