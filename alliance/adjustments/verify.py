"""Adjustment invariants for `alliance verify`: requests and the ledger agree."""

from __future__ import annotations

from alliance.ledger.verify import Check

ADJUSTMENT_CHECKS: tuple[Check, ...] = (
    Check(
        "adjustments_posted_as_requested",
        "each posted adjustment request moved exactly its points against its program's"
        " adjustment account, on its own membership",
        """SELECT 'adjustment request ' || r.id || ' (' || r.direction || ' ' || r.points
                  || ') but its transaction ' || r.transaction_id || ' is '
                  || coalesce(t.kind, 'missing') || ' moving ' || coalesce(s.total, 0)
                  || ' on the adjustment account'
                  || CASE WHEN m.membership_id IS DISTINCT FROM r.membership_id
                          THEN ' and posts to another membership' ELSE '' END
             FROM adjustment_request r
             LEFT JOIN ledger_transaction t ON t.id = r.transaction_id
             LEFT JOIN LATERAL (SELECT -sum(p.amount) AS total FROM posting p
                                  JOIN account a ON a.id = p.account_id
                                 WHERE p.transaction_id = r.transaction_id
                                   AND a.kind = 'adjustment'
                                   AND a.program_id = r.program_id) s ON true
             LEFT JOIN LATERAL (SELECT min(a.membership_id) AS membership_id FROM posting p
                                  JOIN account a ON a.id = p.account_id
                                 WHERE p.transaction_id = r.transaction_id
                                   AND a.kind = 'member') m ON true
            WHERE r.status = 'posted'
              AND (t.kind IS DISTINCT FROM 'adjustment'
                   OR s.total IS DISTINCT FROM
                      CASE r.direction WHEN 'credit' THEN r.points ELSE -r.points END
                   OR m.membership_id IS DISTINCT FROM r.membership_id)""",
    ),
    Check(
        "adjustment_transactions_requested",
        "every adjustment in the ledger is a posted adjustment request",
        """SELECT 'ledger transaction ' || t.id || ' is an adjustment without a request'
             FROM ledger_transaction t
             LEFT JOIN adjustment_request r ON r.transaction_id = t.id AND r.status = 'posted'
            WHERE t.kind = 'adjustment' AND r.id IS NULL""",
    ),
    Check(
        "adjustment_requests_settled",
        "a request is posted exactly when it has a transaction, and one below the threshold"
        " was posted at once",
        """SELECT 'adjustment request ' || id || ' is ' || status
                  || CASE WHEN transaction_id IS NULL THEN ' without' ELSE ' with' END
                  || ' a transaction' || CASE WHEN needs_approval THEN '' ELSE
                  ' (below the threshold)' END
             FROM adjustment_request
            WHERE (status = 'posted') <> (transaction_id IS NOT NULL)
               OR (NOT needs_approval AND status <> 'posted')""",
    ),
    Check(
        "appeals_resolved_by_posted_adjustments",
        "a resolved appeal's adjustment was posted, on the appeal's membership, and a live"
        " appeal's is not",
        """SELECT 'appeal ' || a.id || ' is ' || a.status || ' but its adjustment '
                  || coalesce(r.id::text, 'is missing')
                  || coalesce(' is ' || r.status || ' on membership ' || r.membership_id, '')
             FROM appeal a
             LEFT JOIN adjustment_request r ON r.id = a.adjustment_id
            WHERE (a.status = 'resolved'
                   AND (r.id IS NULL OR r.status <> 'posted' OR r.membership_id <> a.membership_id))
               OR (a.status IN ('open', 'in_review') AND r.status = 'posted')""",
    ),
)
