"""Reversing a purchase's points when the merchant refunds it, fully or in part.

One call of ledger_reverse (migrations/sql/0003_validity.sql): the refund is
recorded even when it claws back nothing, so the next refund of the order knows
how much was refunded before and a full refund takes back exactly what was earned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import IdempotencyKeyReused, InvalidInput
from alliance.ledger.service import raise_domain_error, request_fingerprint
from alliance.validation import check_decimal, clean_text


@dataclass(frozen=True, slots=True)
class Reversal:
    refund_record_id: int
    transaction_id: int | None
    """None when the refund clawed back no points."""
    entry_id: int | None
    """The member's history entry, when points were taken from the balance."""
    membership_id: int
    program_id: int
    balance_after: int | None
    debt_after: int
    refunded: Decimal
    clawback: int
    """Points this refund takes back: taken + debt + written_off."""
    taken: int
    debt: int
    written_off: int
    created_at: datetime
    replayed: bool


_SQL = (
    "SELECT * FROM ledger_reverse(%(merchant)s::bigint, %(refund)s, %(hash)s, %(client)s,"
    " %(order_scope)s, %(order)s, %(amount)s::numeric, %(reason)s)"
)


async def reverse_purchase(
    db: Database,
    actor: Actor,
    *,
    order_id: str,
    refund_id: str,
    amount: Decimal,
    currency: str,
) -> Reversal:
    """Claw back what a refunded purchase earned; idempotent per refund id.

    Points come from the order's own lots first; what the member already spent is
    handled by the program's clawback policy (debt repaid by future credits, or a
    write-off). Refunds of one order may not add up to more than the order.
    """
    actor.require(Role.MERCHANT)
    order_id = clean_text(order_id, "orderId", max_length=64)
    refund_id = clean_text(refund_id, "refundId", max_length=64)
    if currency != db.settings.currency:
        raise InvalidInput(f"the program earns on {db.settings.currency} amounts",
                           field=("currency",))  # fmt: skip
    check_decimal(amount, "amount", minimum_exclusive=Decimal(0), maximum=Decimal(10**9),
                  places=2)  # fmt: skip
    parameters = {
        "merchant": actor.merchant_id, "refund": refund_id, "client": actor.client_id,
        "hash": request_fingerprint("refund", order=order_id, amount=str(amount)),
        "order_scope": f"order:{actor.merchant_id}", "order": order_id, "amount": amount,
        "reason": f"refund {refund_id} of order {order_id}",
    }  # fmt: skip
    try:
        row = await db.fetch_one(_SQL, parameters)
    except psycopg.Error as error:
        try:
            raise_domain_error(error)
        except IdempotencyKeyReused as reused:  # the refund id is this request's key
            raise IdempotencyKeyReused(str(reused), field=("refundId",)) from None
        raise
    assert row is not None, "ledger_reverse always returns its row"
    return Reversal(*row)
