"""DataLoaders, one per relation, built per request for one actor.

Every loader calls a domain read function, which filters by the actor; the
loaders only batch. Connection loaders take (parent id, page arguments) keys and
issue one statement per distinct set of page arguments, whatever the number of
parents.
"""

from __future__ import annotations

from asyncio import Future
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from alliance.adjustments import queries as adjustments
from alliance.adjustments.service import AdjustmentView
from alliance.appeals import queries as appeals
from alliance.appeals.service import AppealView
from alliance.audit import queries as audit
from alliance.auth.actor import Actor
from alliance.db.by_ids import ByIds
from alliance.db.engine import Database
from alliance.db.paging import Page
from alliance.events import webhooks
from alliance.exchange import rates as exchange_rates
from alliance.exchange import service as exchanges
from alliance.identity import service as identity
from alliance.ledger import holds
from alliance.members import queries as members
from alliance.programs import queries as programs
from alliance.rewards import catalog as rewards
from alliance.rewards import redemptions
from alliance.rules import queries as rule_queries
from alliance.rules.service import RuleRecord
from alliance.settlement import queries as settlement
from alliance.settlement.run import PeriodRecord
from alliance.tiers import queries as tier_queries
from alliance.tiers.ladder import Ladder, TierRecord

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
A = TypeVar("A", bound=Hashable)


@dataclass(frozen=True, slots=True)
class PageArgs:
    first: int
    after: int | None
    filters: members.HistoryFilter | None = None


def forget(loader: DataLoader[Any, Any], key: Any) -> None:
    """Drop a cached value after a mutation changed it (DataLoader.clear raises KeyError
    for a key it never loaded)."""
    if loader.cache_map.get(key) is not None:
        loader.clear(key)


def _tuple_pages(
    fetch: Callable[..., Awaitable[dict[int, tuple[list[V], bool]]]],
) -> Callable[[Database, Actor, Sequence[int], PageArgs], Awaitable[dict[int, Page[V]]]]:
    """Adapt a domain read returning (items, has_next) per parent to the page loaders."""

    async def load(
        db: Database, actor: Actor, parent_ids: Sequence[int], args: PageArgs
    ) -> dict[int, Page[V]]:
        found = await fetch(db, actor, parent_ids, first=args.first, after=args.after)
        return {key: Page(items, more) for key, (items, more) in found.items()}

    return load


class StatementLoader(DataLoader[int, V | None]):
    """A DataLoader of a `ByIds` read: when the loop turns, the batch's statement is sent
    (`Database.submit`, shared with other requests' like it) and its rows are handed to
    the waiting loads by the read's callback. Strawberry's DataLoader runs each batch in
    a task of its own, through a coroutine per layer; for a request that loads one
    record that was ~8 µs of ~130. Cache, `prime` and `clear` are the DataLoader's."""

    def __init__(self, db: Database, actor: Actor, read: ByIds[V]) -> None:
        super().__init__(load_fn=self._load_all)
        self._db, self._actor, self._read = db, actor, read
        self._keys: list[int] = []
        self._futures: list[Future[V | None]] = []

    def load(self, key: int) -> Awaitable[V | None]:
        cached = self.cache_map.get(key)
        if cached is not None and not cached.cancelled():
            return cached
        loop = self.loop
        future: Future[V | None] = loop.create_future()
        self.cache_map.set(key, future)
        if not self._keys:
            loop.call_soon(self._send)
        self._keys.append(key)
        self._futures.append(future)
        return future

    def _send(self) -> None:
        keys, futures = self._keys, self._futures
        self._keys, self._futures = [], []
        if all(future.cancelled() for future in futures):
            return  # as strawberry's: no read when no load still waits
        try:
            read = self._db.submit(*self._read.statement(self._actor, keys))
        except Exception as error:
            _fail(futures, error)
            return
        read.add_done_callback(partial(self._deliver, keys, futures))

    def _deliver(
        self, keys: list[int], futures: list[Future[V | None]], read: Future[list[Any]]
    ) -> None:
        if read.cancelled():
            for future in futures:
                future.cancel()
            return
        try:
            found = self._read.found(read.result())
        except Exception as error:
            _fail(futures, error)
            return
        for key, future in zip(keys, futures, strict=True):
            if not future.done():
                future.set_result(found.get(key))

    async def _load_all(self, keys: list[int]) -> list[V | None]:
        """The DataLoader's own way, for what may call it (nothing here does)."""
        found = await self._read(self._db, self._actor, keys)
        return [found.get(key) for key in keys]


def _fail(futures: list[Future[Any]], error: Exception) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)


class Loaders:
    def __init__(self, db: Database, actor: Actor) -> None:
        self._db = db
        self._actor = actor
        self._built: dict[str, DataLoader[Any, Any]] = {}

    def _by_id(
        self,
        name: str,
        fetch: Callable[[Database, Actor, Sequence[int]], Awaitable[dict[int, V]]],
    ) -> DataLoader[int, V | None]:
        loader = self._built.get(name)
        if loader is None and isinstance(fetch, ByIds):
            loader = self._built[name] = StatementLoader(self._db, self._actor, fetch)
        elif loader is None:
            db, actor = self._db, self._actor

            async def load(ids: list[int]) -> list[V | None]:
                found = await fetch(db, actor, ids)
                return [found.get(key) for key in ids]

            loader = self._built[name] = DataLoader(load_fn=load)
        return loader

    def _pages(
        self,
        name: str,
        fetch: Callable[[Database, Actor, Sequence[int], PageArgs], Awaitable[dict[int, Page[V]]]],
    ) -> DataLoader[tuple[int, PageArgs], Page[V]]:
        loader = self._built.get(name)
        if loader is None:
            db, actor = self._db, self._actor

            async def load(keys: list[tuple[int, PageArgs]]) -> list[Page[V]]:
                groups: dict[PageArgs, list[int]] = {}
                for parent_id, args in keys:
                    groups.setdefault(args, []).append(parent_id)
                pages: dict[tuple[int, PageArgs], Page[V]] = {}
                for args, parent_ids in groups.items():
                    found = await fetch(db, actor, parent_ids, args)
                    pages.update(((parent, args), page) for parent, page in found.items())
                return [pages[key] for key in keys]

            loader = self._built[name] = DataLoader(load_fn=load)
        return loader

    # -- nodes ---------------------------------------------------------------------

    @property
    def merchant(self) -> DataLoader[int, programs.MerchantRecord | None]:
        return self._by_id("merchant", programs.merchants_by_id)

    @property
    def hold(self) -> DataLoader[int, holds.HoldRecord | None]:
        return self._by_id("hold", holds.holds_by_id)

    @property
    def exchange_rate(self) -> DataLoader[int, exchange_rates.RateRecord | None]:
        return self._by_id("exchange_rate", exchange_rates.rates_by_id)

    @property
    def exchange(self) -> DataLoader[int, exchanges.ExchangeRecord | None]:
        return self._by_id("exchange", exchanges.exchanges_by_id)

    @property
    def exchange_quote(self) -> DataLoader[int, exchanges.QuoteRecord | None]:
        return self._by_id("exchange_quote", exchanges.quotes_by_id)

    @property
    def statement(self) -> DataLoader[int, settlement.StatementRecord | None]:
        return self._by_id("statement", settlement.statements_by_id)

    @property
    def settlement_period(self) -> DataLoader[int, PeriodRecord | None]:
        return self._by_id("settlement_period", settlement.periods_by_id)

    @property
    def lines_of_statement(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[settlement.LineRecord]]:
        return self._pages("lines_of_statement", _tuple_pages(settlement.lines_of_statements))

    @property
    def obligations_of_line(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[settlement.ObligationRecord]]:
        return self._pages("obligations_of_line", _tuple_pages(settlement.obligations_of_lines))

    @property
    def exchanges_of_member(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[exchanges.ExchangeRecord]]:
        return self._pages("exchanges_of_member", _tuple_pages(exchanges.exchanges_of_member))

    @property
    def program(self) -> DataLoader[int, programs.ProgramRecord | None]:
        return self._by_id("program", programs.programs_by_id)

    @property
    def member(self) -> DataLoader[int, members.MemberRecord | None]:
        return self._by_id("member", members.members_by_id)

    @property
    def membership(self) -> DataLoader[int, members.MembershipRecord | None]:
        return self._by_id("membership", members.memberships_by_id)

    @property
    def entry(self) -> DataLoader[int, members.HistoryEntry | None]:
        return self._by_id("entry", members.entries_by_id)

    @property
    def rule(self) -> DataLoader[int, RuleRecord | None]:
        return self._by_id("rule", rule_queries.rules_by_id)

    @property
    def earn_details(self) -> DataLoader[int, dict[str, Any] | None]:
        """Stored breakdowns by transaction, for entries already loaded (so visible)."""
        return self._by_id("earn_details", rule_queries.details_by_transaction)

    @property
    def tier(self) -> DataLoader[int, TierRecord | None]:
        return self._by_id("tier", tier_queries.tiers_by_id)

    @property
    def tier_policy(self) -> DataLoader[int, Ladder | None]:
        """The ladder in force per program."""
        return self._by_id("tier_policy", tier_queries.ladders_by_program)

    @property
    def identifiers(self) -> DataLoader[int, list[identity.IdentifierRecord] | None]:
        """Verified identifiers per member (masked unless the member's own)."""
        return self._by_id("identifiers", identity.identifiers_by_member)

    @property
    def held_tier(self) -> DataLoader[int, TierRecord | None]:
        """The tier each membership holds now."""
        return self._by_id("held_tier", tier_queries.held_tiers_by_membership)

    @property
    def tier_standing(self) -> DataLoader[int, tier_queries.TierStanding | None]:
        return self._by_id("tier_standing", tier_queries.standings_by_membership)

    @property
    def reward(self) -> DataLoader[int, rewards.RewardRecord | None]:
        return self._by_id("reward", rewards.rewards_by_id)

    @property
    def redemption(self) -> DataLoader[int, redemptions.RedemptionRecord | None]:
        return self._by_id("redemption", redemptions.redemptions_by_id)

    @property
    def coupon(self) -> DataLoader[int, redemptions.CouponRecord | None]:
        """The coupon of each redemption (None: not fulfilled with one)."""
        return self._by_id("coupon", redemptions.coupons_by_redemption)

    @property
    def reward_version_number(self) -> DataLoader[int, int | None]:
        return self._by_id("reward_version_number", redemptions.version_numbers)

    @property
    def can_afford(self) -> DataLoader[int, bool | None]:
        """Per reward: whether the viewing member's spendable points pay for it."""
        return self._by_id("can_afford", rewards.can_afford_by_reward)

    # -- scalars computed per parent ----------------------------------------------

    @property
    def price_in(self) -> DataLoader[tuple[int, int], int | None]:
        """Keyed by (reward id, program id): the reward's price in that program's points."""
        loader = self._built.get("price_in")
        if loader is None:
            db, actor = self._db, self._actor

            async def load(keys: list[tuple[int, int]]) -> list[int | None]:
                found = await rewards.prices_in(db, actor, keys)
                return [found.get(key) for key in keys]

            loader = self._built["price_in"] = DataLoader(load_fn=load)
        return loader

    @property
    def outstanding_points(self) -> DataLoader[int, int | None]:
        return self._by_id("outstanding_points", programs.outstanding_points_by_program)

    @property
    def spendable_points(self) -> DataLoader[int, int | None]:
        return self._by_id("spendable_points", members.spendable_by_membership)

    @property
    def expiring_points(self) -> DataLoader[tuple[int, int], int]:
        """Keyed by (membership id, days ahead): one statement per distinct window."""
        loader = self._built.get("expiring_points")
        if loader is None:
            db, actor = self._db, self._actor

            async def load(keys: list[tuple[int, int]]) -> list[int]:
                found: dict[tuple[int, int], int] = {}
                now = datetime.now(UTC)
                for days in {days for _, days in keys}:
                    ids = [membership for membership, d in keys if d == days]
                    points = await members.expiring_by_membership(
                        db, actor, ids, until=now + timedelta(days=days)
                    )
                    found.update(
                        ((membership, days), value) for membership, value in points.items()
                    )
                return [found.get(key, 0) for key in keys]

            loader = self._built["expiring_points"] = DataLoader(load_fn=load)
        return loader

    # -- connections --------------------------------------------------------------

    @property
    def programs_of_merchant(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[programs.ProgramRecord]]:
        return self._pages(
            "programs_of_merchant",
            lambda db, actor, ids, args: programs.program_pages_by_merchant(
                db, actor, ids, first=args.first, after=args.after
            ),
        )

    @property
    def memberships_of_program(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[members.MembershipRecord]]:
        return self._pages(
            "memberships_of_program",
            lambda db, actor, ids, args: members.membership_pages_by_program(
                db, actor, ids, first=args.first, after=args.after
            ),
        )

    @property
    def memberships_of_member(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[members.MembershipRecord]]:
        return self._pages(
            "memberships_of_member",
            lambda db, actor, ids, args: members.membership_pages_by_member(
                db, actor, ids, first=args.first, after=args.after
            ),
        )

    @property
    def history_of_membership(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[members.HistoryEntry]]:
        return self._pages(
            "history_of_membership",
            lambda db, actor, ids, args: members.history_pages_by_membership(
                db,
                actor,
                ids,
                first=args.first,
                after=args.after,
                filters=args.filters or members.HistoryFilter(),
            ),
        )

    @property
    def lots_of_membership(self) -> DataLoader[tuple[int, PageArgs], Page[members.LotRecord]]:
        return self._pages(
            "lots_of_membership",
            lambda db, actor, ids, args: members.lot_pages_by_membership(
                db, actor, ids, first=args.first, after=args.after
            ),
        )

    @property
    def rules_of_program(self) -> DataLoader[tuple[int, PageArgs], Page[RuleRecord]]:
        return self._pages(
            "rules_of_program",
            lambda db, actor, ids, args: rule_queries.rule_pages_by_program(
                db, actor, ids, first=args.first, after=args.after
            ),
        )

    @property
    def tiers_of_program(self) -> DataLoader[tuple[int, PageArgs], Page[TierRecord]]:
        return self._pages(
            "tiers_of_program",
            lambda db, actor, ids, args: tier_queries.tier_pages_by_program(
                db, actor, ids, first=args.first, after=args.after
            ),
        )

    @property
    def redemptions_of_membership(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[redemptions.RedemptionRecord]]:
        return self._pages(
            "redemptions_of_membership",
            lambda db, actor, ids, args: redemptions.redemption_pages_by_membership(
                db, actor, ids, first=args.first, after=args.after
            ),
        )

    @property
    def tier_history_of_membership(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[tier_queries.TierChangeRecord]]:
        return self._pages(
            "tier_history_of_membership",
            lambda db, actor, ids, args: tier_queries.tier_change_pages_by_membership(
                db, actor, ids, first=args.first, after=args.after
            ),
        )

    @property
    def history_of_member(self) -> DataLoader[tuple[int, PageArgs], Page[members.HistoryEntry]]:
        return self._pages(
            "history_of_member",
            lambda db, actor, ids, args: members.history_pages_by_member(
                db,
                actor,
                ids,
                first=args.first,
                after=args.after,
                filters=args.filters or members.HistoryFilter(),
            ),
        )

    @property
    def audit_record(self) -> DataLoader[int, audit.AuditRecordView | None]:
        return self._by_id("audit_record", audit.audit_records_by_id)

    @property
    def adjustment(self) -> DataLoader[int, AdjustmentView | None]:
        return self._by_id("adjustment", adjustments.adjustments_by_id)

    @property
    def appeal(self) -> DataLoader[int, AppealView | None]:
        return self._by_id("appeal", appeals.appeals_by_id)

    @property
    def messages_of_appeal(self) -> DataLoader[tuple[int, PageArgs], Page[appeals.MessageView]]:
        return self._pages("messages_of_appeal", _tuple_pages(appeals.messages_of_appeals))

    @property
    def webhook_delivery(self) -> DataLoader[int, webhooks.DeliveryView | None]:
        return self._by_id("webhook_delivery", webhooks.deliveries_by_id)

    @property
    def attempts_of_delivery(
        self,
    ) -> DataLoader[tuple[int, PageArgs], Page[webhooks.AttemptView]]:
        return self._pages("attempts_of_delivery", _tuple_pages(webhooks.attempts_of_deliveries))
