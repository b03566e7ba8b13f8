-- (a, plain) The same earn written as plain SQL, one statement per round trip, as a
-- straightforward implementation would send it: BEGIN, look-up, claim the idempotency
-- key, credit the account, two postings, a lot, an outbox event, COMMIT (8 round trips).
-- Same variables as pgbench_award_function.sql.
\set i random(0, :members - 1)
\set membership :membership_base + :i
\set merchant :merchant_base + :i / :per_merchant
\set points random(1, 500)
\set key random(1, 4000000000000000000)
BEGIN;
SELECT a.id AS account_id, a.member_id AS member_id, a.program_id AS program_id,
       s.id AS system_account_id, p.expiry_policy AS expiry_policy,
       p.expiry_value AS expiry_value, p.pending_days AS pending_days
  FROM membership m
  JOIN program p ON p.id = m.program_id
  JOIN account a ON a.membership_id = m.id
  JOIN account s ON s.program_id = p.id AND s.kind = 'issued' AND s.membership_id IS NULL
 WHERE m.id = :membership::bigint AND p.merchant_id = :merchant::bigint
   AND m.status = 'active' AND p.status = 'active' \gset
INSERT INTO ledger_transaction
       (kind, member_id, client_id, idempotency_scope, idempotency_key, request_hash, reason)
VALUES ('award', :member_id::bigint, :client, :scope, :key::text, :hash::bytea, :reason)
RETURNING id AS tx \gset
UPDATE account SET balance = balance + :points::bigint WHERE id = :account_id::bigint
RETURNING balance AS balance \gset
INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount, balance_after)
VALUES (:tx::bigint, :account_id::bigint, :program_id::bigint, :member_id::bigint, :points::bigint, :balance::bigint),
       (:tx::bigint, :system_account_id::bigint, :program_id::bigint, :member_id::bigint, -(:points::bigint), NULL);
INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount, remaining, available_at, expires_at)
VALUES (:account_id::bigint, :program_id::bigint, :member_id::bigint, :tx::bigint, :points::bigint, :points::bigint,
        now() + make_interval(days => :pending_days::int),
        lot_expiry(:expiry_policy, :expiry_value::int, now(), :tz));
INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
VALUES ('points.earned', :merchant::bigint, :member_id::bigint,
        jsonb_build_object('transaction_id', :tx::bigint, 'membership_id', :membership::bigint,
                           'program_id', :program_id::bigint, 'points', :points::bigint,
                           'balance_after', :balance::bigint));
COMMIT;
