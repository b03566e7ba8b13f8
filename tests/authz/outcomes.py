"""How an authorization-matrix row turned out, read from a GraphQL result.

- ok         done / visible
- FORBIDDEN  (or any GraphQL error code) the role may never do this
- NOT_FOUND  (or any userError code) refused by a business rule, e.g. not the actor's
- hidden     a read that returns null / an empty list, as for a missing object
"""

from __future__ import annotations

from typing import Any

HIDDEN = "hidden"


def outcome(result: dict[str, Any]) -> str:
    if errors := result.get("errors"):
        return str(errors[0]["extensions"]["code"])
    (payload,) = result["data"].values()
    if isinstance(payload, dict) and "userErrors" in payload:
        return payload["userErrors"][0]["code"] if payload["userErrors"] else "ok"
    return visible(payload)


def visible(payload: Any) -> str:
    """A read answered with nothing (null leaf, empty list) is `hidden`."""
    if payload is None:
        return HIDDEN
    if isinstance(payload, dict):
        if "edges" in payload:
            return "ok" if payload["edges"] else HIDDEN
        return "ok" if all(visible(v) == "ok" for v in payload.values()) else HIDDEN
    return "ok"
