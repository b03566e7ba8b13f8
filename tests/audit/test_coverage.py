"""Every mutation of the schema is either audited (with its action) or exempt for a
stated reason: a new mutation fails here until someone decides which.

Static: the schema is enumerated, and each audited action must be written by the domain
code. The audit rows themselves are asserted by the tests of each use case (e.g.
tests/adjustments, tests/appeals, tests/audit/test_graphql.py).
"""

from __future__ import annotations

from pathlib import Path

from schema import create_schema

ROOT = Path(__file__).resolve().parents[2]

AUDITED: dict[str, str] = {
    "createMerchant": "merchant.create",
    "createProgram": "program.create",
    "enrollMember": "membership.enroll",
    "setMemberSegments": "membership.segments",
    "createEarningRule": "earning_rule.version",
    "reviseEarningRule": "earning_rule.version",
    "setPromotionStacking": "program.promotion_stacking",
    "setEarningPolicy": "program.earning_policy",
    "setTierLadder": "tier_ladder.version",
    "setDiscountPolicy": "program.discount_policy",
    "publishExchangeRate": "exchange_rate.publish",
    "withdrawExchangeRate": "exchange_rate.withdraw",
    "setExchangeOptOut": "exchange.opt_out",
    "setPartnerAcceptance": "partner.accept",
    "runSettlement": "settlement.run",
    "setSettlementCadence": "settlement.cadence",
    "issueStatement": "statement.issue",
    "confirmStatement": "statement.confirm",
    "disputeStatement": "statement.dispute",
    "reissueStatement": "statement.reissue",
    "markStatementPaid": "statement.pay",
    "setAdjustmentPolicy": "program.adjustment_policy",
    "requestAdjustment": "adjustment.request",
    "approveAdjustment": "adjustment.approve",
    "rejectAdjustment": "adjustment.reject",
    "openAppeal": "appeal.open",
    "postAppealMessage": "appeal.reply",
    "resolveAppeal": "appeal.resolve",
    "rejectAppeal": "appeal.reject",
    "registerWebhookEndpoint": "webhook.register",
    "disableWebhookEndpoint": "webhook.disable",
    "redeliverWebhook": "webhook.redeliver",
    "createReward": "reward.create",
    "updateReward": "reward.update",
    "archiveReward": "reward.archive",
    "setGiftPolicy": "program.gift_policy",
    "setPrivacyPolicy": "privacy.policy",
    "mergeMembers": "member.merge",
    "exportMyData": "member.export",
    "eraseMember": "member.erase",
    "unlinkMembership": "membership.unlink",
    "startVerification": "identity.verification.start",
    "confirmVerification": "identity.link",
    "grantConsent": "consent.grant",
    "withdrawConsent": "consent.withdraw",
}

_LEDGER = (
    "a points movement: its ledger transaction (append-only, with client and key) is its record"
)
EXEMPT: dict[str, str] = {
    "awardPoints": _LEDGER,
    "spendPoints": _LEDGER,
    "recordPurchase": _LEDGER,
    "recordAction": _LEDGER,
    "reversePurchase": _LEDGER,
    "authorizeDiscount": _LEDGER + " (the hold row, with its client)",
    "captureDiscount": _LEDGER,
    "refundDiscount": _LEDGER,
    "voidDiscount": "releases a hold: the hold row keeps its closing state and time",
    "exchangePoints": _LEDGER,
    "redeemAtPartner": _LEDGER,
    "exchangeQuote": "a two-minute price lock: changes nothing",
    "reserveReward": _LEDGER + " (the hold and the redemption row, with its client)",
    "fulfilRedemption": "the redemption row keeps its fulfilment (coupon or shipment) and time",
    "completeRedemption": _LEDGER,
    "cancelRedemption": "releases a hold and a unit of stock: the redemption row keeps its"
    " closing state and time",
    "redeemCoupon": "the coupon row records its use (merchant, store, time)",
    "giftPoints": _LEDGER + " (and the gift row)",
}


def _mutations() -> set[str]:
    mutation = create_schema()._schema.mutation_type
    assert mutation is not None
    return set(mutation.fields)


def test_every_mutation_is_classified() -> None:
    assert not set(AUDITED) & set(EXEMPT)
    assert set(AUDITED) | set(EXEMPT) == _mutations()


def test_every_audited_action_is_written_by_the_domain() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "alliance").rglob("*.py"))
    for mutation, action in AUDITED.items():
        if action.startswith("statement."):
            step = action.removeprefix("statement.")
            assert 'action=f"statement.{action}"' in source, mutation
            assert f'"{step}"' in source, mutation
        else:
            assert f'"{action}"' in source, f"{mutation}: no code writes {action}"
