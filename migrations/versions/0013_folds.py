"""folds followed by refunds: account.folded_into_id, lot.origin_transaction_id

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25 22:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.scripts import SQL_DIR, definition, execute

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = SQL_DIR / "0013_folds.sql"

# Folds and carried lots made before this migration: the absorbed member's memberships
# whose program the survivor was in were folded into the survivor's account (empty ones
# moved nothing, so no merge transaction names them); each merge transaction re-created
# the lots it consumed in (expires_at, id) order, one for one, in id order.
_BACKFILL = """
UPDATE account a SET folded_into_id = t.id
  FROM membership m
  JOIN member_merge g ON g.absorbed_id = m.member_id
  JOIN membership sm ON sm.member_id = g.survivor_id AND sm.program_id = m.program_id
  JOIN account t ON t.membership_id = sm.id
 WHERE a.membership_id = m.id AND m.status = 'closed' AND t.id <> a.id;
UPDATE account a SET folded_into_id = (t.details->>'to_account_id')::bigint
  FROM ledger_transaction t
 WHERE t.kind = 'merge' AND (t.details->>'from_account_id')::bigint = a.id
   AND (t.details->>'to_account_id')::bigint <> a.id;
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT id FROM ledger_transaction WHERE kind = 'merge' ORDER BY id LOOP
        UPDATE lot SET origin_transaction_id = pair.origin
          FROM (SELECT made.id, taken.origin
                  FROM (SELECT l.id, row_number() OVER (ORDER BY l.id) AS n
                          FROM lot l WHERE l.transaction_id = t.id) made
                  JOIN (SELECT coalesce(l.origin_transaction_id, l.transaction_id) AS origin,
                               row_number() OVER (ORDER BY l.expires_at NULLS LAST, l.id) AS n
                          FROM lot_consumption c JOIN lot l ON l.id = c.lot_id
                         WHERE c.transaction_id = t.id) taken ON taken.n = made.n) pair
         WHERE lot.id = pair.id;
    END LOOP;
END $$;
"""

# Functions this migration replaces, and the script that wrote each before it.
REPLACED = {"ledger_reverse": "0005_earning.sql", "ledger_hold_refund": "0006_holds.sql"}


def upgrade() -> None:
    op.add_column("account", sa.Column("folded_into_id", sa.BigInteger()))
    op.create_foreign_key(
        op.f("fk_account_folded_into_id_account"), "account", "account",
        ["folded_into_id"], ["id"],
    )  # fmt: skip
    op.add_column("lot", sa.Column("origin_transaction_id", sa.BigInteger()))
    execute(_BACKFILL)
    execute(SQL.read_text())


def downgrade() -> None:
    for name, file in REPLACED.items():
        execute(definition(file, name))
    op.drop_column("lot", "origin_transaction_id")
    op.drop_constraint(op.f("fk_account_folded_into_id_account"), "account", type_="foreignkey")
    op.drop_column("account", "folded_into_id")
