-- The expiry of every due lot as one set-based statement: the same postings, lot
-- consumptions, balances and events as the job (alliance/ledger/expiry.py), without
-- batches, account locks or held-point checks. The yardstick the job is measured against.
WITH due AS (
    SELECT l.id AS lot_id, l.account_id, l.program_id, l.member_id, l.remaining,
           a.membership_id, s.id AS system_account_id,
           a.balance - sum(l.remaining) OVER (PARTITION BY l.account_id ORDER BY l.id)
               AS balance_after
      FROM lot l
      JOIN account a ON a.id = l.account_id
      JOIN account s ON s.program_id = l.program_id AND s.kind = 'expired'
                    AND s.membership_id IS NULL
     WHERE l.remaining > 0 AND l.expires_at <= now()
), transactions AS (
    INSERT INTO ledger_transaction (kind, member_id, idempotency_scope, idempotency_key, reason)
    SELECT 'expire', due.member_id, 'system:expiry', 'lot:' || due.lot_id, 'points expired'
      FROM due ORDER BY due.account_id, due.lot_id
    RETURNING id, idempotency_key
), expired AS (
    SELECT due.*, transactions.id AS transaction_id
      FROM due JOIN transactions ON transactions.idempotency_key = 'lot:' || due.lot_id
), legs AS (
    INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount, balance_after)
    SELECT e.transaction_id, leg.account_id, e.program_id, e.member_id, leg.amount,
           leg.balance_after
      FROM expired e
     CROSS JOIN LATERAL (VALUES (0, e.account_id, -e.remaining, e.balance_after),
                                (1, e.system_account_id, e.remaining, NULL::bigint))
           AS leg (n, account_id, amount, balance_after)
     ORDER BY e.account_id, e.lot_id, leg.n
), consumed AS (
    INSERT INTO lot_consumption (transaction_id, lot_id, points)
    SELECT e.transaction_id, e.lot_id, e.remaining FROM expired e
), emptied AS (
    UPDATE lot SET remaining = 0 FROM expired e WHERE lot.id = e.lot_id
), debited AS (
    UPDATE account SET balance = account.balance - totals.points
      FROM (SELECT e.account_id, sum(e.remaining) AS points FROM expired e
             GROUP BY e.account_id) totals
     WHERE account.id = totals.account_id
), events AS (
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    SELECT 'points.expired', p.merchant_id, e.member_id,
           jsonb_build_object('membership_id', e.membership_id, 'program_id', e.program_id,
                              'points', sum(e.remaining), 'lots', count(*),
                              'balance_after', min(e.balance_after))
      FROM expired e JOIN program p ON p.id = e.program_id
     GROUP BY p.merchant_id, e.member_id, e.membership_id, e.program_id
)
SELECT count(*) FROM expired;
