"""GraphQL for settlement: periods, statements and their lines, finance reports."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Self, TypeVar

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.errors import InvalidInput
from alliance.settlement import queries as settlement
from alliance.settlement import reconcile, reports, service
from alliance.settlement.models import Cadence
from alliance.settlement.queries import LineRecord, ObligationRecord, StatementRecord
from alliance.settlement.run import PeriodRecord, run_settlement, set_cadence
from schema.context import Info
from schema.errors import UserError, mutate
from schema.loaders import forget
from schema.pagination import DEFAULT_PAGE_SIZE, check_first, decode_cursor
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import (
    Merchant,
    Program,
    connection_of,
    load_nodes,
    node_pk,
    page_args,
    page_connection,
)

authenticated: list[type[BasePermission]] = [IsAuthenticated]
SettlementCadence = strawberry.enum(Cadence, name="SettlementCadence")
R = TypeVar("R")


async def _merchant(info: Info, merchant_id: int | None) -> Merchant | None:
    if merchant_id is None:
        return None
    record = await info.context.loaders.merchant.load(merchant_id)
    return None if record is None else Merchant.from_record(record)


@strawberry.type(description="A settlement period, cut at midnight in the alliance time zone.")
class SettlementPeriod(relay.Node):
    id: relay.NodeID[int]
    starts_at: datetime
    ends_at: datetime
    cadence: str
    status: str = strawberry.field(description="running (a run is finishing it) or closed.")
    obligations: BigInt | None = strawberry.field(description="How many obligations it took.")
    closed_at: datetime | None

    @classmethod
    def from_record(cls, r: PeriodRecord) -> Self:
        return cls(
            id=r.id,
            starts_at=r.starts_at,
            ends_at=r.ends_at,
            cadence=r.cadence,
            status=r.status,
            closed_at=r.closed_at,
            obligations=None if r.obligations is None else BigInt(r.obligations),
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.settlement_period, node_ids, cls.from_record)


@strawberry.type(name="SettlementPeriodConnection")
class SettlementPeriodConnection(relay.Connection[SettlementPeriod]):
    pass


@strawberry.type(
    description="What one merchant (or the alliance) owed or was owed by another, "
    "one obligation at a time: the trail to the ledger."
)
class SettlementObligation:
    kind: str = strawberry.field(description="exchange, exchange_fee or partner_redemption.")
    debtor_merchant_id: strawberry.Private[int]
    creditor_merchant_id: strawberry.Private[int | None]
    program_id: strawberry.Private[int]
    transaction_id: BigInt = strawberry.field(description="The ledger transaction behind it.")
    points: BigInt
    point_value: Decimal
    amount: Decimal = strawberry.field(description="points × pointValue, exact.")
    occurred_at: datetime

    @classmethod
    def from_record(cls, r: ObligationRecord) -> Self:
        return cls(
            kind=r.kind,
            debtor_merchant_id=r.debtor_merchant_id,
            creditor_merchant_id=r.creditor_merchant_id,
            program_id=r.program_id,
            transaction_id=BigInt(r.transaction_id),
            points=BigInt(r.points),
            point_value=r.point_value,
            amount=r.amount,
            occurred_at=r.occurred_at,
        )

    @strawberry.field
    async def debtor(self, info: Info) -> Merchant | None:
        return await _merchant(info, self.debtor_merchant_id)

    @strawberry.field(description="Null: the alliance (fees).")
    async def creditor(self, info: Info) -> Merchant | None:
        return await _merchant(info, self.creditor_merchant_id)

    @strawberry.field
    async def program(self, info: Info) -> Program | None:
        record = await info.context.loaders.program.load(self.program_id)
        return None if record is None else Program.from_record(record)


@strawberry.type(name="SettlementObligationConnection")
class SettlementObligationConnection(relay.Connection[SettlementObligation]):  # type: ignore[type-var]
    pass


@strawberry.type(
    description="A line of a statement. Gross lines (receivable, payable) sum "
    "obligations; the rest are derived from them."
)
class SettlementLine:
    line_id: strawberry.Private[int]
    position: int
    kind: str = strawberry.field(
        description="receivable, payable, bilateral_net, rounding or multilateral_net."
    )
    counterparty_merchant_id: strawberry.Private[int | None]
    obligation_kind: str | None
    obligation_count: BigInt
    points: BigInt
    exact_amount: Decimal
    amount: Decimal = strawberry.field(description="Rounded to 0.01, half to even (gross lines).")

    @classmethod
    def from_record(cls, r: LineRecord) -> Self:
        return cls(
            line_id=r.id,
            position=r.position,
            kind=r.kind,
            counterparty_merchant_id=r.counterparty_merchant_id,
            obligation_kind=r.obligation_kind,
            obligation_count=BigInt(r.obligations),
            points=BigInt(r.points),
            exact_amount=r.exact_amount,
            amount=r.amount,
        )

    @strawberry.field(description="Null: the alliance, or no single counterparty.")
    async def counterparty(self, info: Info) -> Merchant | None:
        return await _merchant(info, self.counterparty_merchant_id)

    @strawberry.field(description="The obligations a gross line sums (empty on derived lines).")
    async def obligations(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> SettlementObligationConnection:
        return await connection_of(
            info.context.loaders.obligations_of_line,
            self.line_id,
            page_args(first, after),
            SettlementObligationConnection,
            SettlementObligation.from_record,
            lambda r: r.id,
        )


@strawberry.type(name="SettlementLineConnection")
class SettlementLineConnection(relay.Connection[SettlementLine]):  # type: ignore[type-var]
    pass


@strawberry.type(description="One party's settlement statement for one period.")
class SettlementStatement(relay.Node):
    id: relay.NodeID[int]
    period_id: strawberry.Private[int]
    merchant_id: strawberry.Private[int | None]
    status: str = strawberry.field(description="draft, issued, confirmed, disputed or paid.")
    receivable: Decimal
    payable: Decimal
    net: Decimal = strawberry.field(
        description="What the clearing house pays the party (negative: what the party pays it)."
    )
    rounding: Decimal = strawberry.field(description="Exact net less net: what rounding moved.")
    dispute_reason: str | None
    payment_reference: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, r: StatementRecord) -> Self:
        return cls(
            id=r.id,
            period_id=r.period_id,
            merchant_id=r.merchant_id,
            status=r.status,
            receivable=r.receivable,
            payable=r.payable,
            net=r.net,
            rounding=r.rounding,
            dispute_reason=r.dispute_reason,
            payment_reference=r.payment_reference,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.statement, node_ids, cls.from_record)

    @strawberry.field(description="Null: the alliance's own statement.")
    async def merchant(self, info: Info) -> Merchant | None:
        return await _merchant(info, self.merchant_id)

    @strawberry.field
    async def period(self, info: Info) -> SettlementPeriod | None:
        record = await info.context.loaders.settlement_period.load(self.period_id)
        return None if record is None else SettlementPeriod.from_record(record)

    @strawberry.field(
        description="In order: receivables, payables, bilateral nets, rounding, multilateral net."
    )
    async def lines(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> SettlementLineConnection:
        return await connection_of(
            info.context.loaders.lines_of_statement,
            self.id,
            page_args(first, after),
            SettlementLineConnection,
            SettlementLine.from_record,
            lambda r: r.position,
        )

    @strawberry.field(description="Download as CSV (same token, an HTTP GET).")
    def csv_url(self) -> str:
        return f"/settlement/statements/{self.id}.csv"


@strawberry.type(name="SettlementStatementConnection")
class SettlementStatementConnection(relay.Connection[SettlementStatement]):
    pass


@strawberry.type(description="A program's outstanding points and their value at a moment.")
class ProgramLiability:
    program_id: strawberry.Private[int]
    outstanding_points: BigInt
    point_value: Decimal
    liability: Decimal

    @strawberry.field
    async def program(self, info: Info) -> Program | None:
        record = await info.context.loaders.program.load(self.program_id)
        return None if record is None else Program.from_record(record)


@strawberry.type(name="ProgramLiabilityConnection")
class ProgramLiabilityConnection(relay.Connection[ProgramLiability]):  # type: ignore[type-var]
    pass


@strawberry.type(description="What moved in a program during a window.")
class ProgramMovements:
    program_id: strawberry.Private[int]
    issued: BigInt
    redeemed: BigInt
    expired: BigInt
    exchanged_in: BigInt
    exchanged_out: BigInt
    fees: BigInt
    breakage_rate: Decimal | None = strawberry.field(description="expired / issued.")

    @strawberry.field
    async def program(self, info: Info) -> Program | None:
        record = await info.context.loaders.program.load(self.program_id)
        return None if record is None else Program.from_record(record)


@strawberry.type(name="ProgramMovementsConnection")
class ProgramMovementsConnection(relay.Connection[ProgramMovements]):  # type: ignore[type-var]
    pass


@strawberry.type(
    description="Ledger, obligations and statement for one kind of obligation "
    "between two parties: the three must be equal."
)
class ReconciliationRow:
    kind: str
    debtor_merchant_id: strawberry.Private[int]
    creditor_merchant_id: strawberry.Private[int | None]
    ledger: Decimal
    obligations: Decimal
    statements: Decimal
    matches: bool

    @strawberry.field
    async def debtor(self, info: Info) -> Merchant | None:
        return await _merchant(info, self.debtor_merchant_id)

    @strawberry.field(description="Null: the alliance.")
    async def creditor(self, info: Info) -> Merchant | None:
        return await _merchant(info, self.creditor_merchant_id)


@strawberry.type(name="ReconciliationRowConnection")
class ReconciliationRowConnection(relay.Connection[ReconciliationRow]):  # type: ignore[type-var]
    pass


@strawberry.type
class Reconciliation:
    period_id: strawberry.Private[int]
    matches: bool = strawberry.field(description="No difference anywhere.")
    differences: list[str]
    row_records: strawberry.Private[list[reconcile.ReconciliationRow]]

    @strawberry.field
    def rows(
        self, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> ReconciliationRowConnection:
        return _sliced(
            ReconciliationRowConnection,
            self.row_records,
            first,
            after,
            lambda r: ReconciliationRow(
                kind=r.kind,
                debtor_merchant_id=r.debtor_merchant_id,
                creditor_merchant_id=r.creditor_merchant_id,
                ledger=r.ledger,
                obligations=r.obligations,
                statements=r.statements,
                matches=r.matches,
            ),
        )


def _sliced(
    connection: type[Any], items: Sequence[R], first: int, after: str | None, node: Any
) -> Any:
    """A connection over a short, fully computed list (a report): cursors are positions."""
    first, after_key = check_first(first), decode_cursor(after)
    start = after_key or 0
    window = list(enumerate(items, start=1))[start : start + first]
    return page_connection(
        connection,
        window,
        start + first < len(items),
        lambda pair: node(pair[1]),
        after=after_key,
        key=lambda pair: pair[0],
    )


@strawberry.type
class SettlementQueries:
    @strawberry.field(permission_classes=authenticated, description="Newest first.")
    async def settlement_periods(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> SettlementPeriodConnection:
        first, after_key = check_first(first), decode_cursor(after)
        items, more = await settlement.periods_page(
            info.context.db, info.context.actor, first=first, after=after_key
        )
        return page_connection(
            SettlementPeriodConnection, items, more, SettlementPeriod.from_record, after=after_key
        )

    @strawberry.field(
        permission_classes=authenticated,
        description="The statements you are party to (all, alliance-wide), newest first.",
    )
    async def settlement_statements(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        period_id: relay.GlobalID | None = None,
        status: str | None = None,
    ) -> SettlementStatementConnection:
        first, after_key = check_first(first), decode_cursor(after)
        items, more = await settlement.statements_page(
            info.context.db,
            info.context.actor,
            first=first,
            after=after_key,
            period_id=None
            if period_id is None
            else node_pk(period_id, SettlementPeriod, "periodId"),
            status=status,
        )
        return page_connection(
            SettlementStatementConnection,
            items,
            more,
            SettlementStatement.from_record,
            after=after_key,
        )

    @strawberry.field(
        permission_classes=authenticated,
        description="Outstanding points and liability per program at a moment "
        "(finance, operator, auditor, merchant: its own programs).",
    )
    async def liability_report(
        self, info: Info, at: datetime, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> ProgramLiabilityConnection:
        rows = await reports.liability_at(info.context.db, info.context.actor, at=at)
        return _sliced(
            ProgramLiabilityConnection,
            rows,
            first,
            after,
            lambda r: ProgramLiability(
                program_id=r.program_id,
                outstanding_points=BigInt(r.outstanding_points),
                point_value=r.point_value,
                liability=r.liability,
            ),
        )

    @strawberry.field(
        permission_classes=authenticated,
        description="Issued, redeemed, expired, exchanged points and breakage per "
        "program in [since, until).",
    )
    async def movement_report(
        self,
        info: Info,
        since: datetime,
        until: datetime,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> ProgramMovementsConnection:
        rows = await reports.movements(
            info.context.db, info.context.actor, since=since, until=until
        )
        return _sliced(
            ProgramMovementsConnection,
            rows,
            first,
            after,
            lambda r: ProgramMovements(
                program_id=r.program_id,
                issued=BigInt(r.issued),
                redeemed=BigInt(r.redeemed),
                expired=BigInt(r.expired),
                exchanged_in=BigInt(r.exchanged_in),
                exchanged_out=BigInt(r.exchanged_out),
                fees=BigInt(r.fees),
                breakage_rate=r.breakage_rate,
            ),
        )

    @strawberry.field(
        permission_classes=authenticated,
        description="A closed period's ledger vs obligations vs statements.",
    )
    async def reconciliation(self, info: Info, period_id: relay.GlobalID) -> Reconciliation:
        found = await reconcile.reconcile_period(
            info.context.db,
            info.context.actor,
            period_id=node_pk(period_id, SettlementPeriod, "periodId"),
        )
        return Reconciliation(
            period_id=found.period_id,
            matches=not found.differences,
            differences=found.differences,
            row_records=found.rows,
        )


@strawberry.input
class RunSettlementInput:
    until: datetime | None = strawberry.field(default=None, description="Default: now.")


@strawberry.type
class RunSettlementPayload:
    periods: list[SettlementPeriod] = strawberry.field(
        default_factory=list, description="The periods this run closed (at most the due ones)."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class SetSettlementCadenceInput:
    cadence: SettlementCadence  # type: ignore[valid-type]


@strawberry.type
class SetSettlementCadencePayload:
    cadence: SettlementCadence | None = None  # type: ignore[valid-type]
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class StatementStepInput:
    statement_id: relay.GlobalID
    reason: str | None = strawberry.field(default=None, description="For a dispute.")
    note: str | None = strawberry.field(default=None, description="For a re-issue.")
    payment_reference: str | None = strawberry.field(default=None, description="For a payment.")


@strawberry.type
class StatementPayload:
    statement: SettlementStatement | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


async def _step(info: Info, input: StatementStepInput, action: str) -> StatementPayload:
    async def run() -> StatementPayload:
        db, actor = info.context.db, info.context.actor
        statement_id = node_pk(input.statement_id, SettlementStatement, "statementId")
        match action:
            case "issue":
                record = await service.issue_statement(db, actor, statement_id=statement_id)
            case "confirm":
                record = await service.confirm_statement(db, actor, statement_id=statement_id)
            case "dispute":
                if input.reason is None:
                    raise InvalidInput("a dispute needs a reason", field=("reason",))
                record = await service.dispute_statement(
                    db, actor, statement_id=statement_id, reason=input.reason
                )
            case "reissue":
                if input.note is None:
                    raise InvalidInput("say how the dispute was resolved", field=("note",))
                record = await service.reissue_statement(
                    db, actor, statement_id=statement_id, note=input.note
                )
            case _:
                if input.payment_reference is None:
                    raise InvalidInput("a payment needs its reference", field=("paymentReference",))
                record = await service.mark_statement_paid(
                    db, actor, statement_id=statement_id, payment_reference=input.payment_reference
                )
        forget(info.context.loaders.statement, statement_id)
        return StatementPayload(statement=SettlementStatement.from_record(record))

    return await mutate(StatementPayload, run)


@strawberry.type
class SettlementMutations:
    @strawberry.mutation(
        permission_classes=authenticated,
        description="Close every period that has ended (operator, alliance "
        "finance). Safe to repeat and to retry after a crash.",
    )
    async def run_settlement(self, info: Info, input: RunSettlementInput) -> RunSettlementPayload:
        async def run() -> RunSettlementPayload:
            periods = await run_settlement(info.context.db, info.context.actor, until=input.until)
            return RunSettlementPayload(periods=[SettlementPeriod.from_record(p) for p in periods])

        return await mutate(RunSettlementPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Daily, weekly or monthly periods from the next one on.",
    )
    async def set_settlement_cadence(
        self, info: Info, input: SetSettlementCadenceInput
    ) -> SetSettlementCadencePayload:
        async def run() -> SetSettlementCadencePayload:
            done = await set_cadence(
                info.context.db, info.context.actor, cadence=Cadence(input.cadence)
            )
            return SetSettlementCadencePayload(cadence=done)

        return await mutate(SetSettlementCadencePayload, run)

    @strawberry.mutation(
        permission_classes=authenticated, description="draft → issued (operator, alliance finance)."
    )
    async def issue_statement(self, info: Info, input: StatementStepInput) -> StatementPayload:
        return await _step(info, input, "issue")

    @strawberry.mutation(
        permission_classes=authenticated, description="issued → confirmed (the party's finance)."
    )
    async def confirm_statement(self, info: Info, input: StatementStepInput) -> StatementPayload:
        return await _step(info, input, "confirm")

    @strawberry.mutation(
        permission_classes=authenticated,
        description="issued → disputed, with a reason (the party's finance).",
    )
    async def dispute_statement(self, info: Info, input: StatementStepInput) -> StatementPayload:
        return await _step(info, input, "dispute")

    @strawberry.mutation(
        permission_classes=authenticated,
        description="disputed → issued once resolved (operator, alliance finance).",
    )
    async def reissue_statement(self, info: Info, input: StatementStepInput) -> StatementPayload:
        return await _step(info, input, "reissue")

    @strawberry.mutation(
        permission_classes=authenticated,
        description="confirmed → paid, with the payment reference (operator, alliance finance).",
    )
    async def mark_statement_paid(self, info: Info, input: StatementStepInput) -> StatementPayload:
        return await _step(info, input, "pay")
