"""EXPLAIN (ANALYZE, BUFFERS) of the hot queries on a large database, stored in
bench/explain/, so the plans that keep per-request cost flat as data grows are on record.

    python -m bench.explain --database-url postgresql://…   (e.g. a `python -m bench --keep`
                                                            scratch, started again)

Each statement is the one the service runs (the ledger functions' inner statements
written out with the ids of a typical member), and each must use its index: the script
exits 1 when a plan reads a large table sequentially.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

OUT = Path(__file__).resolve().parent / "explain"
LARGE = ("posting", "lot", "ledger_transaction", "account", "membership", "member")

# name -> (why it is hot, SQL with %(membership)s / %(account)s / %(member)s / %(program)s)
QUERIES: dict[str, tuple[str, str]] = {
    "credit_account": (
        "every award and earn: the member account, its program and the issued account",
        "SELECT * FROM ledger_credit_account(%(membership)s, NULL, NULL)",
    ),
    "credit_account_inner": (
        "the statement inside ledger_credit_account",
        """SELECT a.id, a.member_id, a.program_id, p.merchant_id, p.expiry_policy, i.id
             FROM membership m
             JOIN program p ON p.id = m.program_id
             JOIN account a ON a.membership_id = m.id
             JOIN account i ON i.program_id = p.id AND i.kind = 'issued'
                           AND i.membership_id IS NULL
            WHERE m.id = %(membership)s""",
    ),
    "spend_open_lots": (
        "every spend: the account's open lots, soonest-expiring first (ix_lot_open)",
        """SELECT l.id, l.remaining FROM lot l
            WHERE l.account_id = %(account)s AND l.remaining > 0
              AND l.available_at <= now() AND (l.expires_at IS NULL OR l.expires_at > now())
            ORDER BY l.expires_at NULLS LAST, l.id""",
    ),
    "balance_read": (
        "the member's balance (case d)",
        """SELECT m.id, a.balance, a.held, a.debt FROM membership m
             JOIN account a ON a.membership_id = m.id WHERE m.id = %(membership)s""",
    ),
    "history_page": (
        "a member's history, newest first (ix_posting_member_history)",
        """SELECT p.id, p.amount, p.balance_after, t.kind, t.reason
             FROM posting p JOIN ledger_transaction t ON t.id = p.transaction_id
            WHERE p.member_id = %(member)s AND p.balance_after IS NOT NULL
            ORDER BY p.id DESC LIMIT 20""",
    ),
    "idempotency_replay": (
        "every replay and key claim: the transaction by (scope, key)",
        """SELECT id FROM ledger_transaction
            WHERE idempotency_scope = 'bench-history' AND idempotency_key = %(key)s""",
    ),
    "expiry_due": (
        "the expiry job's next batch (ix_lot_expiring)",
        """SELECT l.id, l.account_id FROM lot l
            WHERE l.remaining > 0 AND l.expires_at <= now()
            ORDER BY l.expires_at, l.id LIMIT 500""",
    ),
}


def app_history_pages(membership: int, member: int) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """The history pages as the service sends them (alliance/members/queries.py), as an
    operator: a membership's and a member's newest 20 entries."""
    from alliance.auth.actor import Actor
    from alliance.auth.models import Role
    from alliance.db.compiled import actor_params, actor_variant
    from alliance.members import queries

    actor = Actor(Role.OPERATOR, "client:explain", "explain")
    found = queries.HistoryFilter()
    pages = {}
    for name, compiled, parent in (
        ("history_page_membership", queries._history_of_membership, membership),
        ("history_page_member", queries._history_of_member, member),
    ):
        sql, params = compiled.bind(
            *actor_variant(actor), False, found.variant, after=None, **found.params(),
            **actor_params(actor),
        )  # fmt: skip
        why = f"{name.removeprefix('history_page_')}.transactions(first: 20), as sent by the app"
        pages[name] = (why, sql, {**params, "parent_ids": [parent], "limit": 21})
    return pages


# A history page must stop at the page: its ids from the history index alone, not every
# posting of the member read and sorted (migration 0018).
MUST_NOT = {
    "history_page_membership": r"Bitmap Heap Scan on posting|Sort Key: posting\.id",
    "history_page_member": r"Bitmap Heap Scan on posting",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--out", type=Path, default=OUT / "hot-queries.md")
    args = parser.parse_args(argv)
    url = args.database_url.replace("postgresql+psycopg://", "postgresql://")
    OUT.mkdir(exist_ok=True)
    bad = []
    with psycopg.connect(url, autocommit=True) as conn:
        sizes = dict(
            conn.execute(
                "SELECT relname, reltuples::bigint FROM pg_class WHERE relname = ANY(%s)",
                (list(LARGE),),
            ).fetchall()
        )
        row = conn.execute(
            """SELECT a.membership_id, a.id, a.member_id, a.program_id,
                      (SELECT max(t.idempotency_key) FROM ledger_transaction t
                        WHERE t.idempotency_scope = 'bench-history')
                 FROM account a WHERE a.kind = 'member'
                ORDER BY a.id LIMIT 1 OFFSET (SELECT count(*) / 2 FROM account)"""
        ).fetchone()
        assert row is not None, "an empty database"
        params = dict(zip(("membership", "account", "member", "program", "key"), row, strict=True))
        lines = [
            f"# Plans on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            "Rows: " + ", ".join(f"{name} {sizes.get(name, 0):,}" for name in LARGE),
            "",
        ]
        statements = {name: (why, sql, params) for name, (why, sql) in QUERIES.items()}
        statements |= app_history_pages(params["membership"], params["member"])
        for name, (why, sql, bound) in statements.items():
            plan = conn.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON) {sql}", bound
            ).fetchall()
            text = "\n".join(r[0] for r in plan)
            scans = re.findall(r"Seq Scan on (\w+)", text)
            if any(table in LARGE and table not in ("program",) for table in scans):
                bad.append(f"{name}: sequential scan on {', '.join(scans)}")
            if name in MUST_NOT and re.search(MUST_NOT[name], text):
                bad.append(f"{name}: reads past the page ({MUST_NOT[name]})")
            lines += [f"## {name}", "", why, "", "```", sql.strip(), "", text, "```", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    for problem in bad:
        print(problem, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
