"""The coarse gate: a field needs an authenticated caller. The domain decides the rest."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from schema.context import Info


class IsAuthenticated(BasePermission):
    message = "authentication required: send a bearer token"
    error_extensions = {"code": "UNAUTHENTICATED"}  # noqa: RUF012

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.viewer is not None
