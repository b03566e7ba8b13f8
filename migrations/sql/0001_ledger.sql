-- Ledger guards and the single-statement ledger movements (migration 0001).
--
-- Every points movement is one call of one function, so over an autocommit
-- connection the call *is* the transaction: one round trip, and any RAISE
-- rolls back everything the call wrote (idempotency claim included).
--
-- Errors carry SQLSTATEs of class LA that the domain maps to error codes:
--   LA404 membership not found (or not visible to the caller: same answer)
--   LA409 idempotency key reused with a different request
--   LA402 insufficient spendable points
--   LA423 program or membership not active
--   LA500 ledger invariant violated (a bug, never a user error)

-- Postings, transactions and lot consumptions are facts: fix mistakes with new
-- transactions, never by editing history.
CREATE FUNCTION ledger_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'LA500';
END $$;

CREATE TRIGGER posting_append_only BEFORE UPDATE OR DELETE ON posting
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_transaction_append_only BEFORE UPDATE OR DELETE ON ledger_transaction
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER lot_consumption_append_only BEFORE UPDATE OR DELETE ON lot_consumption
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER audit_record_append_only BEFORE UPDATE OR DELETE ON audit_record
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- All postings of a transaction are inserted by one statement, so checking the
-- statement's new rows checks whole transactions: per program they sum to zero.
CREATE FUNCTION posting_check_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_bad record;
BEGIN
    SELECT transaction_id, program_id, sum(amount) AS total INTO v_bad
      FROM new_postings
     GROUP BY transaction_id, program_id
    HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'unbalanced postings: transaction % program % sums to %',
            v_bad.transaction_id, v_bad.program_id, v_bad.total
            USING ERRCODE = 'LA500';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER posting_balanced AFTER INSERT ON posting
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION posting_check_balanced();

-- When a lot earned at `earned_at` stops being spendable, per the program's policy,
-- with days and months cut in the alliance time zone.
CREATE FUNCTION lot_expiry(p_policy text, p_value integer, p_earned_at timestamptz, p_time_zone text)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE p_policy
        WHEN 'never' THEN NULL
        WHEN 'days_after_earn' THEN
            (date_trunc('day', p_earned_at AT TIME ZONE p_time_zone)
             + make_interval(days => p_value + 1)) AT TIME ZONE p_time_zone
        WHEN 'end_of_nth_month' THEN
            (date_trunc('month', p_earned_at AT TIME ZONE p_time_zone)
             + make_interval(months => p_value + 1)) AT TIME ZONE p_time_zone
        -- 积分清零: what was earned in year Y is cleared at the end of day MMDD of year Y+1.
        WHEN 'annual_clearing' THEN
            (make_date(extract(year FROM p_earned_at AT TIME ZONE p_time_zone)::integer + 1,
                       p_value / 100, p_value % 100)
             + 1)::timestamp AT TIME ZONE p_time_zone
    END
$$;

-- The first result of an idempotent request, or LA409 when the key was used
-- for a different request.
CREATE FUNCTION ledger_replay(p_scope text, p_key text, p_request_hash bytea)
RETURNS TABLE (transaction_id bigint, entry_id bigint, program_id bigint, balance_after bigint,
               created_at timestamptz, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_tx record;
BEGIN
    SELECT t.id, t.request_hash, t.created_at, p.id AS entry_id, p.program_id, p.balance_after
      INTO v_tx
      FROM ledger_transaction t
      LEFT JOIN posting p ON p.transaction_id = t.id AND p.balance_after IS NOT NULL
     WHERE t.idempotency_scope = p_scope AND t.idempotency_key = p_key
     ORDER BY p.id
     LIMIT 1;
    IF NOT FOUND THEN
        -- The conflicting claim was rolled back after we saw it; the client may retry.
        RAISE EXCEPTION 'concurrent request with the same idempotency key failed; retry'
            USING ERRCODE = '40001';
    END IF;
    IF v_tx.request_hash IS DISTINCT FROM p_request_hash THEN
        RAISE EXCEPTION 'idempotency key % was already used for a different request', p_key
            USING ERRCODE = 'LA409';
    END IF;
    RETURN QUERY SELECT v_tx.id, v_tx.entry_id, v_tx.program_id, v_tx.balance_after,
                        v_tx.created_at, true;
END $$;

-- The member account a movement touches, with its program and the program's
-- system account of `p_system_kind`. Restricted to one merchant's programs
-- and/or one member's memberships when those are given (NULL: any).
CREATE FUNCTION ledger_member_account(
    p_membership_id bigint, p_merchant_id bigint, p_member_id bigint, p_system_kind text)
RETURNS TABLE (account_id bigint, member_id bigint, program_id bigint, merchant_id bigint,
               active boolean, expiry_policy text, expiry_value integer, pending_days integer,
               system_account_id bigint)
LANGUAGE sql STABLE AS $$
    SELECT a.id, a.member_id, a.program_id, p.merchant_id,
           p.status = 'active' AND m.status = 'active',
           p.expiry_policy, p.expiry_value, p.pending_days, s.id
      FROM membership m
      JOIN program p ON p.id = m.program_id
      JOIN account a ON a.membership_id = m.id
      JOIN account s ON s.program_id = p.id AND s.kind = p_system_kind AND s.membership_id IS NULL
     WHERE m.id = p_membership_id
       AND (p_merchant_id IS NULL OR p.merchant_id = p_merchant_id)
       AND (p_member_id IS NULL OR m.member_id = p_member_id)
$$;

-- Claim the idempotency key with a new transaction row; NULL when the key is
-- already taken (a concurrent claim is waited for: it commits or rolls back).
CREATE FUNCTION ledger_claim(
    p_kind text, p_scope text, p_key text, p_request_hash bytea, p_client_id text,
    p_member_id bigint, p_reason text, p_details jsonb)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO ledger_transaction
        (kind, member_id, client_id, idempotency_scope, idempotency_key, request_hash, reason,
         details)
    VALUES (p_kind, p_member_id, p_client_id, p_scope, p_key, p_request_hash, p_reason,
            p_details)
    ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING
    RETURNING id
$$;

-- Both legs of a movement on a member account, in one statement (so the
-- balance trigger sees the whole transaction); returns the member leg's id.
CREATE FUNCTION ledger_post(
    p_transaction_id bigint, p_account_id bigint, p_system_account_id bigint,
    p_program_id bigint, p_member_id bigint, p_points bigint, p_balance_after bigint)
RETURNS bigint
LANGUAGE sql AS $$
    WITH legs AS (
        INSERT INTO posting
            (transaction_id, account_id, program_id, member_id, amount, balance_after)
        VALUES (p_transaction_id, p_account_id, p_program_id, p_member_id, p_points,
                p_balance_after),
               (p_transaction_id, p_system_account_id, p_program_id, p_member_id, -p_points,
                NULL)
        RETURNING id, account_id
    )
    SELECT legs.id FROM legs WHERE legs.account_id = p_account_id
$$;

-- Award points to a membership: +points on the member account, -points on the
-- program's `issued` account, a new lot, an outbox event. p_kind is `award` (a fixed
-- award) or `earn` (points computed by earning rules, explained by p_details).
CREATE FUNCTION ledger_award(
    p_scope text, p_key text, p_request_hash bytea, p_client_id text,
    p_merchant_id bigint, p_member_id bigint, p_membership_id bigint, p_points bigint,
    p_reason text, p_time_zone text, p_kind text DEFAULT 'award', p_details jsonb DEFAULT NULL)
RETURNS TABLE (transaction_id bigint, entry_id bigint, program_id bigint, balance_after bigint,
               created_at timestamptz, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_tx bigint;
    v_entry bigint;
    v_balance bigint;
BEGIN
    SELECT * INTO v FROM ledger_member_account(p_membership_id, p_merchant_id, p_member_id, 'issued');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    v_tx := ledger_claim(p_kind, p_scope, p_key, p_request_hash, p_client_id, v.member_id,
                         p_reason, p_details);
    IF v_tx IS NULL THEN
        RETURN QUERY SELECT * FROM ledger_replay(p_scope, p_key, p_request_hash);
        RETURN;
    END IF;
    IF NOT v.active THEN
        RAISE EXCEPTION 'program or membership is not active' USING ERRCODE = 'LA423';
    END IF;

    UPDATE account SET balance = account.balance + p_points
     WHERE id = v.account_id
    RETURNING account.balance INTO v_balance;
    v_entry := ledger_post(v_tx, v.account_id, v.system_account_id, v.program_id, v.member_id,
                           p_points, v_balance);

    INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount, remaining,
                     available_at, expires_at)
    VALUES (v.account_id, v.program_id, v.member_id, v_tx, p_points, p_points,
            now() + make_interval(days => v.pending_days),
            lot_expiry(v.expiry_policy, v.expiry_value, now(), p_time_zone));

    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.earned', v.merchant_id, v.member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', p_membership_id,
                               'program_id', v.program_id, 'points', p_points,
                               'balance_after', v_balance));

    RETURN QUERY SELECT v_tx, v_entry, v.program_id, v_balance, now(), false;
END $$;

-- Spend points of a membership: a conditional debit (so concurrent spends can
-- never overdraw), lots consumed soonest-expiring first, +points on `redeemed`.
CREATE FUNCTION ledger_spend(
    p_scope text, p_key text, p_request_hash bytea, p_client_id text,
    p_merchant_id bigint, p_member_id bigint, p_membership_id bigint, p_points bigint,
    p_reason text, p_time_zone text)
RETURNS TABLE (transaction_id bigint, entry_id bigint, program_id bigint, balance_after bigint,
               created_at timestamptz, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_tx bigint;
    v_entry bigint;
    v_balance bigint;
    v_held bigint;
    v_spendable bigint;
    v_taken bigint;
BEGIN
    SELECT * INTO v FROM ledger_member_account(p_membership_id, p_merchant_id, p_member_id, 'redeemed');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    v_tx := ledger_claim('spend', p_scope, p_key, p_request_hash, p_client_id, v.member_id,
                         p_reason, NULL);
    IF v_tx IS NULL THEN
        RETURN QUERY SELECT * FROM ledger_replay(p_scope, p_key, p_request_hash);
        RETURN;
    END IF;
    IF NOT v.active THEN
        RAISE EXCEPTION 'program or membership is not active' USING ERRCODE = 'LA423';
    END IF;

    -- The row lock taken here also guards the account's lots: lots are only
    -- ever changed by a statement that first updated their account row.
    UPDATE account SET balance = account.balance - p_points
     WHERE id = v.account_id AND account.balance - account.held >= p_points
    RETURNING account.balance, account.held INTO v_balance, v_held;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient points' USING ERRCODE = 'LA402';
    END IF;

    -- Pending (not yet available) and expired-but-not-yet-swept lots are in the
    -- balance but not spendable.
    SELECT coalesce(sum(l.remaining), 0) INTO v_spendable
      FROM lot l
     WHERE l.account_id = v.account_id AND l.remaining > 0
       AND l.available_at <= now() AND (l.expires_at IS NULL OR l.expires_at > now());
    IF v_spendable - v_held < p_points THEN
        RAISE EXCEPTION 'insufficient points' USING ERRCODE = 'LA402';
    END IF;

    WITH open_lots AS (
        SELECT l.id, l.remaining,
               coalesce(sum(l.remaining) OVER (ORDER BY l.expires_at NULLS LAST, l.id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
          FROM lot l
         WHERE l.account_id = v.account_id AND l.remaining > 0
           AND l.available_at <= now() AND (l.expires_at IS NULL OR l.expires_at > now())
    ), taken AS (
        SELECT o.id, least(o.remaining, p_points - o.before) AS points
          FROM open_lots o
         WHERE o.before < p_points
    ), consumed AS (
        UPDATE lot SET remaining = lot.remaining - taken.points
          FROM taken
         WHERE lot.id = taken.id
        RETURNING lot.id, taken.points
    )
    INSERT INTO lot_consumption (transaction_id, lot_id, points)
    SELECT v_tx, consumed.id, consumed.points FROM consumed;

    SELECT coalesce(sum(c.points), 0) INTO v_taken
      FROM lot_consumption c WHERE c.transaction_id = v_tx;
    IF v_taken <> p_points THEN
        RAISE EXCEPTION 'lots cover % of % points', v_taken, p_points USING ERRCODE = 'LA500';
    END IF;

    v_entry := ledger_post(v_tx, v.account_id, v.system_account_id, v.program_id, v.member_id,
                           -p_points, v_balance);

    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.spent', v.merchant_id, v.member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', p_membership_id,
                               'program_id', v.program_id, 'points', p_points,
                               'balance_after', v_balance));

    RETURN QUERY SELECT v_tx, v_entry, v.program_id, v_balance, now(), false;
END $$;

-- Expire due lots: one ledger transaction per lot remainder (-remainder on the member
-- account, +remainder on the program's `expired` account), for the next p_limit due lots
-- after the cursor (p_after_expires_at, p_after_lot_id) in (expires_at, id) order.
-- Returns what was expired, how many candidate accounts were busy (skipped), and the
-- cursor to continue from (NULL when no lot is due past the cursor).
--
-- Accounts are locked in id order with SKIP LOCKED: a batch never waits for a busy
-- account (a later pass takes it) and two batches never deadlock. Lots change only
-- under their account's lock, as in ledger_spend. Points reserved by holds stay: a
-- lot expires only while the balance left covers what is held. The idempotency key
-- `lot:<id>` makes a lot expire once, whatever is re-run after a crash.
CREATE FUNCTION ledger_expire(
    p_now timestamptz, p_after_expires_at timestamptz, p_after_lot_id bigint, p_limit integer)
RETURNS TABLE (lots integer, points bigint, busy integer, next_expires_at timestamptz,
               next_lot_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_lots bigint[];
    v_candidates bigint[];
    v_accounts bigint[];
    v_next_expires_at timestamptz;
    v_next_lot_id bigint;
BEGIN
    SELECT array_agg(c.id),
           array_agg(DISTINCT c.account_id),
           (array_agg(c.expires_at ORDER BY c.expires_at DESC, c.id DESC))[1],
           (array_agg(c.id ORDER BY c.expires_at DESC, c.id DESC))[1]
      INTO v_lots, v_candidates, v_next_expires_at, v_next_lot_id
      FROM (SELECT l.id, l.account_id, l.expires_at
              FROM lot l
             WHERE l.remaining > 0 AND l.expires_at <= p_now
               AND (l.expires_at, l.id) > (p_after_expires_at, p_after_lot_id)
             ORDER BY l.expires_at, l.id
             LIMIT p_limit) c;
    IF v_candidates IS NULL THEN
        RETURN QUERY SELECT 0, 0::bigint, 0, NULL::timestamptz, NULL::bigint;
        RETURN;
    END IF;
    SELECT array_agg(locked.id) INTO v_accounts
      FROM (SELECT a.id FROM account a WHERE a.id = ANY (v_candidates)
             ORDER BY a.id FOR UPDATE SKIP LOCKED) locked;

    -- Dynamic SQL: planned afresh for each batch's arrays (a cached generic plan
    -- guesses their size badly), while the foreign-key checks it fires keep their
    -- cached plans (a function-level plan_cache_mode would re-plan each of those too).
    RETURN QUERY EXECUTE $batch$
    WITH due AS (
        SELECT l.id AS lot_id, l.account_id, l.program_id, l.member_id, l.remaining,
               a.membership_id, a.balance, a.held, s.id AS system_account_id,
               a.balance - sum(l.remaining) OVER (PARTITION BY l.account_id ORDER BY l.id)
                   AS balance_after
          FROM lot l
          JOIN account a ON a.id = l.account_id
          JOIN account s ON s.program_id = l.program_id AND s.kind = 'expired'
                        AND s.membership_id IS NULL
         WHERE l.id = ANY ($1) AND l.account_id = ANY ($2)
           AND l.remaining > 0 AND l.expires_at <= $3  -- again, now under the lock
    ), allowed AS (
        SELECT * FROM due WHERE due.balance_after >= due.held
    ), transactions AS (
        INSERT INTO ledger_transaction (kind, member_id, idempotency_scope, idempotency_key,
                                        reason)
        SELECT 'expire', allowed.member_id, 'system:expiry', 'lot:' || allowed.lot_id,
               'points expired'
          FROM allowed
         ORDER BY allowed.account_id, allowed.lot_id
        ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING
        RETURNING id, idempotency_key
    ), expired AS (
        SELECT allowed.*, transactions.id AS transaction_id
          FROM allowed JOIN transactions ON transactions.idempotency_key = 'lot:' || allowed.lot_id
    ), legs AS (
        -- Ordered so that posting ids follow each account's running balance.
        INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount,
                             balance_after)
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
    SELECT count(*)::integer, coalesce(sum(e.remaining), 0)::bigint,
           $4,
           $5, $6
      FROM expired e
    $batch$
    USING v_lots, v_accounts, p_now,
          cardinality(v_candidates) - coalesce(cardinality(v_accounts), 0),
          v_next_expires_at, v_next_lot_id;
END $$;
