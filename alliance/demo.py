"""Demo alliance: three merchants, their programs, members with history, a token per role.

Seeding is idempotent: merchants are looked up by code before being created and
every points movement carries a fixed idempotency key, so `alliance serve --demo`
can run any number of times against the same database.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from decimal import Decimal

from rich.console import Console
from sqlalchemy import select

from alliance.auth.actor import Actor
from alliance.auth.clients import create_client, get_client
from alliance.auth.models import Role
from alliance.auth.oauth import member_actor
from alliance.auth.tokens import issue_access_token
from alliance.db.engine import Database
from alliance.errors import AlreadyExists
from alliance.exchange.rates import publish_rate, rates_in_force
from alliance.exchange.service import exchange_points, set_partner_acceptance
from alliance.identity.models import ConsentPurpose
from alliance.identity.service import set_consent
from alliance.ledger.service import award_points, spend_points
from alliance.members.models import Member, Membership
from alliance.members.service import open_membership
from alliance.programs.models import ExpiryPolicy, Merchant, Program
from alliance.programs.service import create_merchant, create_program
from alliance.rules.engine import Action
from alliance.rules.models import RuleKind
from alliance.rules.service import create_rule
from alliance.rules.terms import ConditionsInput, TermsInput
from alliance.tiers.ladder import TierInput
from alliance.tiers.models import TierBasis
from alliance.tiers.service import record_activity, set_tier_ladder

DEMO_TOKEN_TTL = 24 * 3600
"""`alliance serve --demo` raises the token lifetime to this unless configured."""
OPERATOR_CLIENT = "demo-operator"


@dataclass(frozen=True)
class DemoProgram:
    merchant_code: str
    merchant_name: str
    code: str
    name: str
    unit_name: str
    point_value: Decimal
    expiry_policy: ExpiryPolicy
    expiry_value: int


PROGRAMS = (
    DemoProgram(
        "golden-wok",
        "金锅餐饮 Golden Wok",
        "wok-rewards",
        "金锅会员积分",
        "积分",
        Decimal("0.01"),
        ExpiryPolicy.END_OF_NTH_MONTH,
        12,
    ),
    DemoProgram(
        "shopmall",
        "优选商城 ShopMall",
        "mall-points",
        "商城积分",
        "点",
        Decimal("0.005"),
        ExpiryPolicy.DAYS_AFTER_EARN,
        365,
    ),
    DemoProgram(
        "bean-coffee",
        "豆香咖啡 Bean Coffee",
        "bean-stars",
        "咖啡星星",
        "星",
        Decimal("0.02"),
        ExpiryPolicy.NEVER,
        0,
    ),
)

# (member number per program, display name); history: (program index, points, reason)
MEMBERS = (
    (
        "李娜 Li Na",
        ("W-8812", "u-77", "B-301"),
        (
            (0, 1200, "生日礼 birthday gift"),
            (1, 5000, "开户礼 welcome bonus"),
            (2, 80, "首杯 first cup"),
            (0, -300, "抵扣 counter discount"),
        ),
    ),
    (
        "王伟 Wang Wei",
        ("W-8813", "u-78", None),
        ((0, 640, "消费 dinner"), (1, 2500, "订单 order 1042"), (1, -1000, "兑换 voucher")),
    ),
    (
        "陈静 Chen Jing",
        (None, "u-79", "B-302"),
        ((1, 300, "评价 review"), (2, 150, "打卡 check-in week")),
    ),
)


# Earning rules per program: (code, name, kind, terms). Weekend double points at the café.
RULES: tuple[tuple[tuple[str, str, RuleKind, TermsInput], ...], ...] = (
    (("base", "1 积分 per CNY", RuleKind.PURCHASE, TermsInput(points_per_unit=Decimal(1))),
     ("wine", "Wine: 2 extra per CNY", RuleKind.PURCHASE, TermsInput(
         points_per_unit=Decimal(2), conditions=ConditionsInput(categories=["wine"]))),
     ("check-in", "每日签到 daily check-in", RuleKind.ACTION, TermsInput(
         action=Action.DAILY_CHECK_IN, points=5)),
     ("referral", "推荐有礼 refer a friend", RuleKind.ACTION, TermsInput(
         action=Action.REFERRAL, points=100, referee_points=50))),
    (("base", "1 点 per 2 CNY", RuleKind.PURCHASE, TermsInput(
        points_per_unit=Decimal("0.5"), conditions=ConditionsInput(
            excluded_categories=["gift-card"]))),
     ("big-basket", "满 300 送 100", RuleKind.PROMOTION, TermsInput(
         bonus_points=100, conditions=ConditionsInput(minimum_amount=Decimal(300))))),
    (("base", "1 星 per 10 CNY", RuleKind.PURCHASE, TermsInput(points_per_unit=Decimal("0.1"))),
     ("weekend", "周末双倍 weekend double", RuleKind.PROMOTION, TermsInput(
         multiplier=Decimal(2), conditions=ConditionsInput(weekdays=[6, 7])))),
)  # fmt: skip


# Golden Wok's tier ladder: by spend (CNY) over a rolling year, a month's grace.
TIERS = (
    TierInput("regular", "普通 Regular", Decimal(0)),
    TierInput("gold", "黄金 Gold", Decimal(500), Decimal("1.5"), ("生日双倍 double on birthday",)),
    TierInput("platinum", "白金 Platinum", Decimal(3000), Decimal(2),
              ("生日双倍 double on birthday", "包间优先 private room priority")),
)  # fmt: skip
# Spend behind demo history entries (person, step): Wang Wei's dinner makes him 黄金.
QUALIFYING_SPEND = {(1, 0): Decimal("640")}


@dataclass(frozen=True)
class DemoSeed:
    tokens: dict[str, str]
    merchants: list[tuple[str, str]]


async def seed_demo(db: Database) -> DemoSeed:
    operator = await _ensure_client(db, OPERATOR_CLIENT, "Demo operator console", Role.OPERATOR)
    programs: list[Program] = []
    merchant_actors: list[Actor] = []
    for spec in PROGRAMS:
        merchant_id = await _ensure_merchant(db, operator, spec)
        programs.append(await _ensure_program(db, operator, merchant_id, spec))
        merchant_actors.append(
            await _ensure_client(
                db,
                f"demo-{spec.merchant_code}",
                f"{spec.merchant_name} app",
                Role.MERCHANT,
                merchant_id,
            )
        )
    for program, actor, rules in zip(programs, merchant_actors, RULES, strict=True):
        await _ensure_rules(db, actor, program.id, rules)
    # Setting the ladder in force again writes nothing, so this is idempotent too.
    await set_tier_ladder(
        db, merchant_actors[0], program_id=programs[0].id, basis=TierBasis.SPEND,
        window_days=365, grace_days=30, tiers=TIERS,
    )  # fmt: skip
    await _ensure_rewards(db, merchant_actors[0], programs[0].id)
    finance = await _ensure_client(db, "demo-finance", "Demo finance team", Role.FINANCE)
    auditor = await _ensure_client(db, "demo-auditor", "Demo auditor", Role.AUDITOR)

    first_membership: tuple[Actor, int] | None = None
    for person, (display_name, numbers, history) in enumerate(MEMBERS):
        memberships = await _ensure_memberships(db, programs, display_name, numbers)
        if first_membership is None and memberships[0] is not None:
            first_membership = (merchant_actors[0], memberships[0])
        for step, (index, points, reason) in enumerate(history):
            membership_id = memberships[index]
            assert membership_id is not None, "history only in programs the person belongs to"
            move = award_points if points > 0 else spend_points
            movement = await move(
                db,
                merchant_actors[index],
                membership_id=membership_id,
                points=abs(points),
                reason=reason,
                idempotency_key=f"demo-{person}-{step}",
            )
            spend = QUALIFYING_SPEND.get((person, step))
            if spend is not None:  # recorded once per transaction, however often seeded
                await record_activity(db, membership_id=membership_id,
                                      transaction_id=movement.transaction_id,
                                      occurred_at=movement.created_at, spend=spend)  # fmt: skip
    assert first_membership is not None
    await _ensure_exchange(db, operator, programs, merchant_actors, first_membership[1])
    app, membership_id = first_membership
    app_client = await get_client(db, app.client_id)
    assert app_client is not None
    member = await member_actor(db, app_client, membership_id)
    # 李娜 lets golden-wok's app show her points at the other programs (allianceBalances).
    assert app.merchant_id is not None
    await set_consent(db, member, merchant_id=app.merchant_id,
                      purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
    ttl = min(DEMO_TOKEN_TTL, db.settings.access_token_ttl_seconds)
    tokens = {}
    for label, actor in (
        ("operator", operator),
        ("merchant (golden-wok)", merchant_actors[0]),
        ("finance (alliance-wide)", finance),
        ("auditor", auditor),
        ("member (李娜 at golden-wok)", member),
    ):
        tokens[label], _ = await issue_access_token(db, actor=actor, ttl_seconds=ttl)
    return DemoSeed(tokens, [(spec.merchant_code, spec.merchant_name) for spec in PROGRAMS])


# Published rates (from, to, rate, fee %): point values 0.01 (wok), 0.005 (mall), 0.02
# (coffee), so value for value; the fees keep every cycle below 1.
RATES = ((0, 1, "2", Decimal(2)), (1, 0, "1/2", Decimal(2)), (2, 0, "2", Decimal(1)),
         (0, 2, "1/2", Decimal(1)))  # fmt: skip


async def _ensure_exchange(
    db: Database,
    operator: Actor,
    programs: list[Program],
    merchants: list[Actor],
    li_na_at_wok: int,
) -> None:
    """Rates, ShopMall taking Golden Wok points at its counters, and one exchange by 李娜."""
    in_force, _ = await rates_in_force(db, operator, first=100, after=None)
    published = {(r.from_program_id, r.to_program_id) for r in in_force}
    for source, target, rate, fee in RATES:
        if (programs[source].id, programs[target].id) not in published:
            await publish_rate(
                db,
                operator,
                from_program_id=programs[source].id,
                to_program_id=programs[target].id,
                rate=rate,
                fee_percent=fee,
            )
    await set_partner_acceptance(db, merchants[1], program_id=programs[0].id, accepts=True)
    # Golden Wok's rewards can be paid with mall points too (Reward.priceIn).
    await set_partner_acceptance(db, merchants[0], program_id=programs[1].id, accepts=True)
    memberships = await db.fetch_all(
        "SELECT m.id, m.member_id FROM membership m WHERE m.member_id ="
        " (SELECT member_id FROM membership WHERE id = %(m)s) AND m.program_id = %(mall)s",
        {"m": li_na_at_wok, "mall": programs[1].id},
    )
    if memberships:
        to_mall, member_id = memberships[0]
        member = Actor(Role.MEMBER, f"member:{member_id}", merchants[0].client_id,
                       merchant_id=merchants[0].merchant_id, member_id=member_id,
                       membership_id=li_na_at_wok)  # fmt: skip
        await exchange_points(db, member, from_membership_id=li_na_at_wok,
                              to_membership_id=to_mall, points=200,
                              idempotency_key="demo-exchange-1")  # fmt: skip


async def _ensure_rewards(db: Database, merchant: Actor, program_id: int) -> None:
    """Golden Wok's reward catalog and its gift policy (rewards kept when they exist)."""
    from alliance.errors import AlreadyExists
    from alliance.rewards.catalog import RewardTerms, create_reward
    from alliance.rewards.gifting import set_gift_policy
    from alliance.rewards.models import LimitPeriod, RewardKind

    catalog = (
        ("spring-rolls", 100, RewardTerms(kind=RewardKind.COUPON, name="春卷 Spring rolls",
                                          points_price=300, limit_per_period=1,
                                          limit_period=LimitPeriod.DAY)),
        ("wok-set", 20, RewardTerms(kind=RewardKind.GOODS, name="铁锅 Wok set",
                                    points_price=5000, cash_price=Decimal("49.00"),
                                    limit_total=1)),
        ("chef-table", 4, RewardTerms(kind=RewardKind.EXPERIENCE, name="主厨餐桌 Chef's table",
                                      points_price=8000, tier_codes=("gold", "platinum"))),
    )  # fmt: skip
    for code, stock, terms in catalog:
        with contextlib.suppress(AlreadyExists):  # seeded before
            await create_reward(db, merchant, program_id=program_id, code=code, terms=terms,
                                stock=stock)  # fmt: skip
    await set_gift_policy(db, merchant, program_id=program_id, enabled=True,
                          max_points_per_gift=500, daily_limit_points=1000)  # fmt: skip


def print_demo(seed: DemoSeed, base_url: str, console: Console) -> None:
    console.print(
        "[bold]Demo tokens[/] (valid 24 h; paste one into GraphiQL's headers as "
        '{"Authorization": "Bearer <token>"}):'
    )
    for label, minted in seed.tokens.items():
        # Printed whole, one per line: a table would fold or truncate them.
        console.print(f"\n[cyan]{label}[/]")
        print(minted, file=console.file, flush=True)
    console.print(
        f"\nGraphiQL: {base_url}/graphql   Try: "
        "{ viewer { role } merchants { edges { node { name programs { edges { node "
        "{ name pointValue } } } } } } }",
        soft_wrap=True,
    )
    console.print(
        "As the member: { allianceBalances { totalValue lines { edges { node { programName "
        "points value expiringPoints } } } } }. Codes sent by startVerification: alliance "
        "identity code <id>.",
        soft_wrap=True,
    )


async def _ensure_rules(
    db: Database,
    actor: Actor,
    program_id: int,
    rules: tuple[tuple[str, str, RuleKind, TermsInput], ...],
) -> None:
    for code, name, kind, terms in rules:
        with contextlib.suppress(AlreadyExists):  # seeded by an earlier run
            await create_rule(db, actor, program_id=program_id, code=code, kind=kind, name=name,
                              terms=terms)  # fmt: skip


async def _ensure_client(
    db: Database, client_id: str, name: str, role: Role, merchant_id: int | None = None
) -> Actor:
    client = await get_client(db, client_id)
    if client is None:
        await create_client(db, name=name, role=role, merchant_id=merchant_id, client_id=client_id)
        client = await get_client(db, client_id)
    assert client is not None
    return client.actor()


async def _ensure_merchant(db: Database, operator: Actor, spec: DemoProgram) -> int:
    async with db.autocommit() as conn:
        found = await conn.scalar(select(Merchant.id).where(Merchant.code == spec.merchant_code))
    if found is not None:
        return int(found)
    return (
        await create_merchant(db, operator, code=spec.merchant_code, name=spec.merchant_name)
    ).id


async def _ensure_program(
    db: Database, operator: Actor, merchant_id: int, spec: DemoProgram
) -> Program:
    async with db.transaction() as session:
        found = await session.scalar(
            select(Program).where(Program.merchant_id == merchant_id, Program.code == spec.code)
        )
    if found is not None:
        return found
    await create_program(
        db,
        operator,
        merchant_id=merchant_id,
        code=spec.code,
        name=spec.name,
        unit_name=spec.unit_name,
        point_value=spec.point_value,
        expiry_policy=spec.expiry_policy,
        expiry_value=spec.expiry_value,
    )
    return await _ensure_program(db, operator, merchant_id, spec)


async def _ensure_memberships(
    db: Database, programs: list[Program], display_name: str, numbers: tuple[str | None, ...]
) -> list[int | None]:
    """One person with a membership per numbered program, linked as identity federation would."""
    ids: list[int | None] = []
    member_id: int | None = None
    async with db.transaction() as session:
        for program, number in zip(programs, numbers, strict=True):
            if number is None:
                ids.append(None)
                continue
            membership = await session.scalar(
                select(Membership).where(
                    Membership.program_id == program.id, Membership.member_number == number
                )
            )
            if membership is None:
                if member_id is None:
                    member = Member(display_name=display_name)
                    session.add(member)
                    await session.flush()
                    member_id = member.id
                membership = await open_membership(
                    session, member_id=member_id, program_id=program.id, member_number=number
                )
            member_id = membership.member_id
            ids.append(membership.id)
    return ids
