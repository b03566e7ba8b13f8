"""Onboarding merchants and their points programs (the operator's use cases)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.db.errors import constraint_name
from alliance.errors import AlreadyExists, InvalidInput, NotFound
from alliance.ledger.models import SYSTEM_ACCOUNT_KINDS, Account
from alliance.programs.models import ExpiryPolicy, Merchant, Program
from alliance.programs.queries import MerchantRecord, ProgramRecord
from alliance.validation import check_decimal, check_range, clean_code, clean_text

MAX_POINT_VALUE = Decimal("1000")
EXPIRY_LIMITS = {ExpiryPolicy.DAYS_AFTER_EARN: 3650, ExpiryPolicy.END_OF_NTH_MONTH: 120}


def check_expiry(policy: ExpiryPolicy, value: int) -> None:
    """`value` means N days, N months, or a clearing day MMDD (no 29 February), by policy."""
    match policy:
        case ExpiryPolicy.NEVER:
            if value != 0:
                raise InvalidInput(
                    "expiryValue must be 0 when points never expire", field=("expiryValue",)
                )
        case ExpiryPolicy.ANNUAL_CLEARING:
            try:
                date(2001, value // 100, value % 100)  # a common year: no 29 February
            except ValueError:
                raise InvalidInput(
                    "expiryValue must be a clearing day as MMDD, e.g. 1231", field=("expiryValue",)
                ) from None
        case _:
            check_range(value, "expiryValue", minimum=0, maximum=EXPIRY_LIMITS[policy])


async def create_merchant(db: Database, actor: Actor, *, code: str, name: str) -> MerchantRecord:
    actor.require(Role.OPERATOR)
    code = clean_code(code, "code")
    name = clean_text(name, "name", max_length=200)
    async with db.transaction() as session:
        merchant = Merchant(code=code, name=name)
        session.add(merchant)
        try:
            await session.flush()
        except IntegrityError as error:
            if constraint_name(error) == "uq_merchant_code":
                raise AlreadyExists(f"merchant code {code} is taken", field=("code",)) from None
            raise
        await session.refresh(merchant)
        await record_audit(
            session,
            actor,
            action="merchant.create",
            target=f"merchant:{merchant.id}",
            after={"code": code, "name": name},
            merchant_id=merchant.id,
        )
        return MerchantRecord.from_model(merchant)


async def create_program(
    db: Database,
    actor: Actor,
    *,
    merchant_id: int,
    code: str,
    name: str,
    unit_name: str,
    point_value: Decimal,
    expiry_policy: ExpiryPolicy = ExpiryPolicy.NEVER,
    expiry_value: int = 0,
    pending_days: int = 0,
) -> ProgramRecord:
    """A program and its system accounts, in one transaction."""
    actor.require(Role.OPERATOR)
    code = clean_code(code, "code")
    name = clean_text(name, "name", max_length=200)
    unit_name = clean_text(unit_name, "unitName", max_length=40)
    point_value = check_decimal(
        point_value, "pointValue", minimum_exclusive=Decimal(0), maximum=MAX_POINT_VALUE, places=6
    )
    check_expiry(expiry_policy, expiry_value)
    check_range(pending_days, "pendingDays", minimum=0, maximum=365)

    async with db.transaction() as session:
        merchant = await session.get(Merchant, merchant_id, with_for_update={"read": True})
        if merchant is None:
            raise NotFound("merchant not found", field=("merchantId",))
        program = Program(
            merchant_id=merchant_id,
            code=code,
            name=name,
            unit_name=unit_name,
            point_value=point_value,
            currency=db.settings.currency,
            expiry_policy=expiry_policy.value,
            expiry_value=expiry_value,
            pending_days=pending_days,
        )
        session.add(program)
        try:
            await session.flush()
        except IntegrityError as error:
            if constraint_name(error) == "uq_program_merchant_code":
                raise AlreadyExists(
                    f"merchant already has a program with code {code}", field=("code",)
                ) from None
            raise
        await session.execute(
            insert(Account),
            [{"program_id": program.id, "kind": kind.value} for kind in SYSTEM_ACCOUNT_KINDS],
        )
        await session.refresh(program)
        await record_audit(
            session,
            actor,
            action="program.create",
            target=f"program:{program.id}",
            merchant_id=merchant_id,
            after={
                "merchant_id": merchant_id,
                "code": code,
                "name": name,
                "point_value": str(point_value),
                "expiry_policy": expiry_policy.value,
                "expiry_value": expiry_value,
                "pending_days": pending_days,
            },
        )
        return ProgramRecord.from_model(program)
