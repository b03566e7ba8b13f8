"""Domain errors: one base, a stable code, an optional field path.

The GraphQL layer turns these into `userErrors` (business rule failures) or,
for `Unauthorized` / `Forbidden`, into GraphQL errors with the same code.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
    INACTIVE = "INACTIVE"
    RETRY = "RETRY"
    ALREADY_REWARDED = "ALREADY_REWARDED"
    NO_EXCHANGE_RATE = "NO_EXCHANGE_RATE"
    EXCHANGE_CLOSED = "EXCHANGE_CLOSED"
    QUOTE_EXPIRED = "QUOTE_EXPIRED"
    NOT_ACCEPTED = "NOT_ACCEPTED"
    PROFITABLE_CYCLE = "PROFITABLE_CYCLE"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    RATE_LIMITED = "RATE_LIMITED"
    VERIFICATION_FAILED = "VERIFICATION_FAILED"
    OBLIGATIONS_UNSETTLED = "OBLIGATIONS_UNSETTLED"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    LIMIT_REACHED = "LIMIT_REACHED"
    NOT_ELIGIBLE = "NOT_ELIGIBLE"
    NOT_AVAILABLE = "NOT_AVAILABLE"
    SELF_APPROVAL = "SELF_APPROVAL"


class DomainError(Exception):
    code: ErrorCode = ErrorCode.INVALID_INPUT

    def __init__(
        self, message: str, *, field: tuple[str, ...] | None = None, code: ErrorCode | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r}, field={self.field})"


class InvalidInput(DomainError):
    code = ErrorCode.INVALID_INPUT


class NotFound(DomainError):
    """Unknown and not-yours look the same, so nothing can be enumerated."""

    code = ErrorCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = ErrorCode.ALREADY_EXISTS


class Unauthenticated(DomainError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(DomainError):
    """The actor's role may not do this at all (as opposed to NotFound for a foreign object)."""

    code = ErrorCode.FORBIDDEN


class IdempotencyKeyReused(DomainError):
    code = ErrorCode.IDEMPOTENCY_KEY_REUSED


class InsufficientPoints(DomainError):
    code = ErrorCode.INSUFFICIENT_POINTS


class Inactive(DomainError):
    code = ErrorCode.INACTIVE


class RetryLater(DomainError):
    """A transient conflict: the same request may simply be sent again."""

    code = ErrorCode.RETRY


class AlreadyRewarded(DomainError):
    """The action was already rewarded in its period, or the member already referred."""

    code = ErrorCode.ALREADY_REWARDED


class NoExchangeRate(DomainError):
    code = ErrorCode.NO_EXCHANGE_RATE


class ExchangeClosed(DomainError):
    """A merchant of the pair opted out of exchanges between these programs."""

    code = ErrorCode.EXCHANGE_CLOSED


class QuoteExpired(DomainError):
    """The quote's time ran out, or an exchange already used it."""

    code = ErrorCode.QUOTE_EXPIRED


class NotAccepted(DomainError):
    """The partner merchant does not take this program's points."""

    code = ErrorCode.NOT_ACCEPTED


class ProfitableCycle(DomainError):
    """The rate would let points go round a cycle of exchanges and come back more."""

    code = ErrorCode.PROFITABLE_CYCLE


class InvalidTransition(DomainError):
    """The object is not in a state that allows this step."""

    code = ErrorCode.INVALID_TRANSITION


class RateLimited(DomainError):
    """Too many requests of this kind for this identifier or client; try again later."""

    code = ErrorCode.RATE_LIMITED


class VerificationFailed(DomainError):
    """Wrong, expired or exhausted code, or a verification that is not the caller's: one
    answer for all, so nothing can be told apart."""

    code = ErrorCode.VERIFICATION_FAILED


class ObligationsUnsettled(DomainError):
    code = ErrorCode.OBLIGATIONS_UNSETTLED


class OutOfStock(DomainError):
    code = ErrorCode.OUT_OF_STOCK


class LimitReached(DomainError):
    """A per-member limit: redemptions of a reward (in all or per period), daily gifts."""

    code = ErrorCode.LIMIT_REACHED


class NotEligible(DomainError):
    """The member is not in the reward's audience (tier)."""

    code = ErrorCode.NOT_ELIGIBLE


class NotAvailable(DomainError):
    """Archived, outside its validity window, or (gifts) not allowed by the program."""

    code = ErrorCode.NOT_AVAILABLE


class SelfApproval(DomainError):
    """Maker-checker: the staff identity that asked for it may not decide it."""

    code = ErrorCode.SELF_APPROVAL
