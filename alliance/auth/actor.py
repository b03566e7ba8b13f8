"""Who is acting: built from a verified access token, passed to every use case."""

from __future__ import annotations

from dataclasses import dataclass, field

from alliance.auth.models import Role
from alliance.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Actor:
    role: Role
    subject: str
    """`client:<client_id>` for service clients, `member:<id>` for member tokens."""
    client_id: str
    """The OAuth client behind the request (for member tokens: the app that obtained it)."""
    merchant_id: int | None = None
    """Merchant binding: merchant clients, merchant-bound finance, and member tokens' app."""
    member_id: int | None = None
    membership_id: int | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def idempotency_scope(self) -> str:
        """Idempotency keys are unique per client; a member token is its own client."""
        if self.role is Role.MEMBER:
            return f"{self.client_id}/member:{self.member_id}"
        return self.client_id

    @property
    def is_alliance_wide(self) -> bool:
        """Sees every merchant: the operator, auditors, and unbound finance."""
        return self.role in (Role.OPERATOR, Role.AUDITOR) or (
            self.role is Role.FINANCE and self.merchant_id is None
        )

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            allowed = ", ".join(role.value for role in roles)
            raise Forbidden(f"role {self.role.value} may not do this (allowed: {allowed})")
