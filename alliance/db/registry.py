"""Imports every model so `Base.metadata` describes the whole schema (alembic, tests)."""

from alliance.adjustments.models import AdjustmentRequest
from alliance.appeals.models import Appeal, AppealMessage
from alliance.audit.models import AuditChainHead, AuditRecord
from alliance.auth.models import OAuthClient, SigningKey
from alliance.db.base import Base
from alliance.events.models import (
    ExpiryNotice,
    OutboxEvent,
    OutboxSequence,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from alliance.exchange.models import (
    Exchange,
    ExchangeOptOut,
    ExchangeQuote,
    ExchangeRate,
    PartnerAcceptance,
)
from alliance.identity.models import (
    Consent,
    MemberIdentifier,
    MemberMerge,
    MembershipUnlink,
    PrivacyPolicy,
    Verification,
)
from alliance.ledger.models import (
    Account,
    Hold,
    LedgerTransaction,
    Lot,
    LotConsumption,
    Posting,
    PurchaseRefund,
)
from alliance.members.models import Member, Membership
from alliance.programs.models import Merchant, Program
from alliance.rewards.models import (
    Coupon,
    Gift,
    GiftPolicy,
    Redemption,
    Reward,
    RewardStockSlot,
    RewardVersion,
)
from alliance.rules.claims import ActionClaim, EarnCounter, Referral
from alliance.rules.models import EarningRule
from alliance.settlement.models import (
    SettlementCalendar,
    SettlementLine,
    SettlementObligation,
    SettlementPeriod,
    SettlementStatement,
)
from alliance.tiers.models import MembershipTier, QualifyingActivity, Tier, TierChange, TierLadder

metadata = Base.metadata

__all__ = [
    "Account",
    "ActionClaim",
    "AdjustmentRequest",
    "Appeal",
    "AppealMessage",
    "AuditChainHead",
    "AuditRecord",
    "Consent",
    "Coupon",
    "EarnCounter",
    "EarningRule",
    "Exchange",
    "ExchangeOptOut",
    "ExchangeQuote",
    "ExchangeRate",
    "ExpiryNotice",
    "Gift",
    "GiftPolicy",
    "Hold",
    "LedgerTransaction",
    "Lot",
    "LotConsumption",
    "Member",
    "MemberIdentifier",
    "MemberMerge",
    "Membership",
    "MembershipTier",
    "MembershipUnlink",
    "Merchant",
    "OAuthClient",
    "OutboxEvent",
    "OutboxSequence",
    "PartnerAcceptance",
    "Posting",
    "PrivacyPolicy",
    "Program",
    "PurchaseRefund",
    "QualifyingActivity",
    "Redemption",
    "Referral",
    "Reward",
    "RewardStockSlot",
    "RewardVersion",
    "SettlementCalendar",
    "SettlementLine",
    "SettlementObligation",
    "SettlementPeriod",
    "SettlementStatement",
    "SigningKey",
    "Tier",
    "TierChange",
    "TierLadder",
    "Verification",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "metadata",
]
