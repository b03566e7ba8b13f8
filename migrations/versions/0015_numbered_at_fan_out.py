"""outbox events numbered at fan-out: no sequence trigger on the hot path

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26 00:55:00
"""

from collections.abc import Sequence

from migrations.scripts import SQL_DIR, definition, execute

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = SQL_DIR / "0015_numbered_at_fan_out.sql"

# Events written since the upgrade and not yet fanned out have no number; the trigger
# restored below numbers only new ones, so give them theirs first, in id order.
_NUMBER_PENDING = """
WITH fresh AS (
    SELECT o.id,
           CASE WHEN o.member_id IS NOT NULL THEN 'member:' || o.member_id
                WHEN o.merchant_id IS NOT NULL THEN 'merchant:' || o.merchant_id
                ELSE 'alliance' END AS aggregate
      FROM outbox_event o WHERE o.delivered_at IS NULL AND o.aggregate_seq IS NULL
), ranked AS (
    SELECT id, aggregate, row_number() OVER (PARTITION BY aggregate ORDER BY id) AS n FROM fresh
), counts AS (
    SELECT aggregate, max(n) AS n FROM ranked GROUP BY aggregate
), counters AS (
    INSERT INTO outbox_sequence AS s (aggregate, seq) SELECT aggregate, n FROM counts
    ON CONFLICT (aggregate) DO UPDATE SET seq = s.seq + excluded.seq
    RETURNING s.aggregate, s.seq
)
UPDATE outbox_event o SET aggregate = r.aggregate, aggregate_seq = c.seq - k.n + r.n
  FROM ranked r JOIN counts k USING (aggregate) JOIN counters c USING (aggregate)
 WHERE o.id = r.id;
"""

_TRIGGER = """
CREATE TRIGGER outbox_event_sequence BEFORE INSERT ON outbox_event
    FOR EACH ROW EXECUTE FUNCTION outbox_event_sequence();
"""


def upgrade() -> None:
    execute(SQL.read_text())


def downgrade() -> None:
    execute(_NUMBER_PENDING)
    execute("DROP FUNCTION outbox_fan_out(integer);")
    execute(definition("0014_fan_out.sql", "outbox_fan_out"))
    execute(definition("0010_audit_webhooks.sql", "outbox_event_sequence") + _TRIGGER)
