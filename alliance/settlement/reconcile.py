"""Reconciliation: ledger movements vs settlement obligations vs statements.

The same SQL serves `alliance verify` (SETTLEMENT_CHECKS: any row is a violation) and
the finance team's reconciliation report of a period (three totals per counterparty
pair and kind, which must be equal, and the differences listed).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import NotFound
from alliance.ledger.verify import Check

# Per transaction with obligations: what the ledger says each obligation should be.
# Exchanges: the points created in the target program and the fee points; partner
# redemptions: the points spent.
_LEDGER_SIDE = """
    SELECT e.id AS transaction_id, 'exchange' AS kind, fp.merchant_id AS debtor,
           tp.merchant_id AS creditor, tp.id AS program_id, e.points_out AS points
      FROM exchange e
      JOIN membership fm ON fm.id = e.from_membership_id JOIN program fp ON fp.id = fm.program_id
      JOIN membership tm ON tm.id = e.to_membership_id JOIN program tp ON tp.id = tm.program_id
     WHERE fp.merchant_id <> tp.merchant_id
    UNION ALL
    SELECT e.id, 'exchange_fee', fp.merchant_id, NULL, fp.id, e.fee
      FROM exchange e
      JOIN membership fm ON fm.id = e.from_membership_id JOIN program fp ON fp.id = fm.program_id
     WHERE e.fee > 0
    UNION ALL
    SELECT t.id, 'partner_redemption', pr.merchant_id, (t.details->>'partner_merchant_id')::bigint,
           pr.id, -ps.amount
      FROM ledger_transaction t
      JOIN posting ps ON ps.transaction_id = t.id AND ps.balance_after IS NOT NULL
      JOIN program pr ON pr.id = ps.program_id
     WHERE t.kind = 'partner_redemption'
"""

SETTLEMENT_CHECKS: tuple[Check, ...] = (
    Check(
        "exchange_postings_match",
        "each exchange's postings move exactly its points in, fee and points out",
        """SELECT 'exchange ' || e.id || ': member legs ' || coalesce(src.total, 0) || ' / '
                  || coalesce(dst.total, 0) || ', fee leg ' || coalesce(fee.total, 0)
                  || ' but recorded ' || e.points_in || ' in, ' || e.fee || ' fee, '
                  || e.points_out || ' out'
             FROM exchange e
             JOIN account sa ON sa.membership_id = e.from_membership_id
             JOIN account da ON da.membership_id = e.to_membership_id
             LEFT JOIN LATERAL (SELECT sum(p.amount) AS total FROM posting p
                                 WHERE p.transaction_id = e.id
                                   AND p.account_id = sa.id) src ON true
             LEFT JOIN LATERAL (SELECT sum(p.amount) AS total FROM posting p
                                 WHERE p.transaction_id = e.id
                                   AND p.account_id = da.id AND p.amount > 0) dst ON true
             LEFT JOIN LATERAL (SELECT sum(p.amount) AS total FROM posting p
                                  JOIN account f ON f.id = p.account_id AND f.kind = 'fee'
                                 WHERE p.transaction_id = e.id) fee ON true
            WHERE coalesce(src.total, 0) <> -e.points_in
               OR coalesce(dst.total, 0) <> e.points_out
               OR coalesce(fee.total, 0) <> e.fee""",
    ),
    Check(
        "cross_merchant_transactions_have_obligations",
        "every cross-merchant transaction has exactly its settlement obligations",
        f"""SELECT 'transaction ' || coalesce(l.transaction_id, o.transaction_id) || ' '
                   || coalesce(l.kind, o.kind) || ': ledger says '
                   || coalesce(l.points::text, 'nothing') || ' points, obligations '
                   || coalesce(o.points::text, 'none')
              FROM ({_LEDGER_SIDE}) l
              FULL JOIN (SELECT transaction_id, kind, debtor_merchant_id AS debtor,
                                coalesce(creditor_merchant_id, 0) AS creditor, program_id,
                                sum(points) AS points, count(*) AS n
                           FROM settlement_obligation
                          GROUP BY transaction_id, kind, debtor_merchant_id,
                                   creditor_merchant_id, program_id) o
                ON o.transaction_id = l.transaction_id AND o.kind = l.kind
               AND o.debtor = l.debtor AND o.creditor = coalesce(l.creditor, 0)
               AND o.program_id = l.program_id
             WHERE l.points IS DISTINCT FROM o.points OR o.n <> 1""",
    ),
    Check(
        "statements_equal_obligations",
        "each closed period's gross lines equal the sums of its obligations",
        """WITH o AS (
                SELECT p.id AS period_id, o.kind, o.debtor_merchant_id AS debtor,
                       coalesce(o.creditor_merchant_id, 0) AS creditor, count(*) AS n,
                       sum(o.points) AS points, sum(o.amount) AS amount
                  FROM settlement_period p
                 CROSS JOIN LATERAL settlement_period_obligations(p.id) o
                 WHERE p.status = 'closed'
                 GROUP BY 1, 2, 3, 4),
            l AS (
                SELECT s.period_id, l.obligation_kind AS kind, l.debtor_merchant_id AS debtor,
                       coalesce(l.creditor_merchant_id, 0) AS creditor,
                       l.kind AS side, l.obligations AS n, l.points, l.exact_amount AS amount,
                       s.merchant_id AS party
                  FROM settlement_line l JOIN settlement_statement s ON s.id = l.statement_id
                 WHERE l.kind IN ('payable', 'receivable'))
            SELECT 'period ' || coalesce(o.period_id, l.period_id) || ' '
                   || coalesce(o.kind, l.kind) || ' ' || coalesce(o.debtor, l.debtor) || ' → '
                   || coalesce(o.creditor, l.creditor) || ' (' || coalesce(l.side, 'no line')
                   || '): obligations ' || coalesce(o.amount::text, 'none') || ' in '
                   || coalesce(o.n::text, '0') || ', statement ' || coalesce(l.amount::text, 'none')
                   || ' in ' || coalesce(l.n::text, '0')
              FROM o
              FULL JOIN l ON l.period_id = o.period_id AND l.kind = o.kind
               AND l.debtor = o.debtor AND l.creditor = o.creditor
             WHERE o.amount IS DISTINCT FROM l.amount OR o.n IS DISTINCT FROM l.n
                OR o.points IS DISTINCT FROM l.points
                OR (l.side = 'payable' AND l.party IS DISTINCT FROM l.debtor)
                OR (l.side = 'receivable'
                    AND coalesce(l.party, 0) IS DISTINCT FROM l.creditor)""",
    ),
    Check(
        "statement_nets",
        "each statement's net is its rounded gross lines, and each period's nets sum to zero",
        """SELECT 'statement ' || s.id || ' net ' || s.net || ' but its lines give '
                  || coalesce(g.net, 0)
             FROM settlement_statement s
             LEFT JOIN LATERAL (
                 SELECT sum(CASE l.kind WHEN 'receivable' THEN l.amount ELSE -l.amount END)
                        AS net
                   FROM settlement_line l
                  WHERE l.statement_id = s.id AND l.kind IN ('receivable', 'payable')) g ON true
            WHERE s.net <> coalesce(g.net, 0)
               OR NOT EXISTS (SELECT 1 FROM settlement_line m WHERE m.statement_id = s.id
                                 AND m.kind = 'multilateral_net' AND m.amount = s.net)
           UNION ALL
           SELECT 'period ' || period_id || ' nets sum to ' || sum(net)
             FROM settlement_statement GROUP BY period_id HAVING sum(net) <> 0""",
    ),
    Check(
        "settlement_references_exist",
        "obligations name existing merchants and transactions; exchanges and quotes existing"
        " rates and memberships",
        """SELECT 'obligation ' || o.id || ' names merchant '
                  || coalesce(o.creditor_merchant_id, o.debtor_merchant_id) || ', unknown'
             FROM settlement_obligation o
            WHERE NOT EXISTS (SELECT 1 FROM merchant m WHERE m.id = o.debtor_merchant_id)
               OR (o.creditor_merchant_id IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM merchant m WHERE m.id = o.creditor_merchant_id))
           UNION ALL
           SELECT 'exchange ' || e.id || ' names rate ' || e.rate_id || ' or memberships '
                  || e.from_membership_id || ', ' || e.to_membership_id || ', unknown'
             FROM exchange e
            WHERE NOT EXISTS (SELECT 1 FROM exchange_rate r WHERE r.id = e.rate_id)
               OR NOT EXISTS (SELECT 1 FROM membership m WHERE m.id = e.from_membership_id)
               OR NOT EXISTS (SELECT 1 FROM membership m WHERE m.id = e.to_membership_id)
           UNION ALL
           SELECT 'exchange ' || e.id || ' has no exchange transaction of that id'
             FROM exchange e
            WHERE NOT EXISTS (SELECT 1 FROM ledger_transaction t
                               WHERE t.id = e.id AND t.kind = 'exchange')
           UNION ALL
           SELECT 'obligation ' || o.id || ' names transaction ' || o.transaction_id
                  || ', unknown'
             FROM settlement_obligation o
            WHERE NOT EXISTS (SELECT 1 FROM ledger_transaction t WHERE t.id = o.transaction_id)
           UNION ALL
           SELECT 'quote ' || q.id || ' names rate ' || q.rate_id || ', unknown'
             FROM exchange_quote q
            WHERE NOT EXISTS (SELECT 1 FROM exchange_rate r WHERE r.id = q.rate_id)""",
    ),
    Check(
        "periods_follow_each_other",
        "each period starts where the one before ended, from that one's watermark",
        """SELECT 'period ' || p.id || ' follows ' || coalesce(p.previous_ends_at::text, 'nothing')
                  || ' but the period before ends ' || coalesce(q.ends_at::text, 'nowhere')
             FROM settlement_period p
             LEFT JOIN LATERAL (SELECT * FROM settlement_period x WHERE x.ends_at <= p.starts_at
                                 ORDER BY x.ends_at DESC LIMIT 1) q ON true
            WHERE p.previous_ends_at IS DISTINCT FROM q.ends_at
               OR p.previous_watermark <> coalesce(q.watermark, 0)
               OR (q.id IS NOT NULL AND p.starts_at <> q.ends_at)""",
    ),
)


@dataclass(frozen=True, slots=True)
class ReconciliationRow:
    kind: str
    debtor_merchant_id: int
    creditor_merchant_id: int | None
    ledger: Decimal
    """The ledger's points of the period's obligation transactions × their point values."""
    obligations: Decimal
    statements: Decimal
    """The exact amount of the debtor's payable line."""

    @property
    def matches(self) -> bool:
        return self.ledger == self.obligations == self.statements


@dataclass(frozen=True, slots=True)
class Reconciliation:
    period_id: int
    rows: list[ReconciliationRow]
    differences: list[str]
    """Rows that do not match, and any settlement invariant violated anywhere."""


async def reconcile_period(db: Database, actor: Actor, *, period_id: int) -> Reconciliation:
    """Finance (alliance-wide, or a merchant's for the pairs it is party to), operator,
    auditor."""
    actor.require(Role.FINANCE, Role.OPERATOR, Role.AUDITOR)
    period = await db.fetch_one(
        "SELECT id FROM settlement_period WHERE id = %(p)s AND status = 'closed'", {"p": period_id}
    )
    if period is None:
        raise NotFound("closed period not found", field=("periodId",))
    party = None if actor.is_alliance_wide else actor.merchant_id
    rows = await db.fetch_all(
        f"""WITH o AS (
                SELECT * FROM settlement_period_obligations(%(p)s)),
            ledger AS (
                SELECT l.kind, l.debtor, coalesce(l.creditor, 0) AS creditor,
                       sum(l.points * ob.point_value) AS amount
                  FROM ({_LEDGER_SIDE}) l
                  JOIN o ob ON ob.transaction_id = l.transaction_id AND ob.kind = l.kind
                 GROUP BY 1, 2, 3),
            obligations AS (
                SELECT kind, debtor_merchant_id AS debtor,
                       coalesce(creditor_merchant_id, 0) AS creditor, sum(amount) AS amount
                  FROM o GROUP BY 1, 2, 3),
            lines AS (
                SELECT l.obligation_kind AS kind, l.debtor_merchant_id AS debtor,
                       coalesce(l.creditor_merchant_id, 0) AS creditor, l.exact_amount AS amount
                  FROM settlement_line l JOIN settlement_statement s ON s.id = l.statement_id
                 WHERE s.period_id = %(p)s AND l.kind = 'payable')
            SELECT coalesce(b.kind, s.kind), coalesce(b.debtor, s.debtor),
                   nullif(coalesce(b.creditor, s.creditor), 0),
                   coalesce(g.amount, 0), coalesce(b.amount, 0), coalesce(s.amount, 0)
              FROM obligations b
              FULL JOIN lines s USING (kind, debtor, creditor)
              LEFT JOIN ledger g ON g.kind = coalesce(b.kind, s.kind)
                                AND g.debtor = coalesce(b.debtor, s.debtor)
                                AND g.creditor = coalesce(b.creditor, s.creditor)
             WHERE %(party)s::bigint IS NULL
                OR %(party)s::bigint IN (coalesce(b.debtor, s.debtor),
                                         coalesce(b.creditor, s.creditor))
             ORDER BY 2, 3 NULLS FIRST, 1""",
        {"p": period_id, "party": party},
    )
    result = [
        ReconciliationRow(r[0], r[1], r[2], Decimal(r[3]), Decimal(r[4]), Decimal(r[5]))
        for r in rows
    ]
    differences = [
        f"{r.kind} {r.debtor_merchant_id} → {r.creditor_merchant_id or 'alliance'}: ledger "
        f"{r.ledger}, obligations {r.obligations}, statements {r.statements}"
        for r in result
        if not r.matches
    ]
    if party is None:
        from alliance.ledger.verify import run_checks

        differences += [f"{v.check}: {v.detail}" for v in await run_checks(db, SETTLEMENT_CHECKS)]
    return Reconciliation(period_id, result, differences)
