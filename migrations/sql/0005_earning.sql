-- Earning and its reversal (migration 0005, after tiers): earns by rules with caps,
-- once-only action claims, referrals, and purchase reversals; each feeds the member's
-- tier qualification in the same transaction when the program has tiers.
--
-- New SQLSTATEs (see 0001_ledger.sql for the others):
--   LA410 action already rewarded in this period / member already referred
--   LA422 request not valid against the stored facts (refund above the order, self-referral…)
--   LA414 order not found (no earn recorded for it)
--   LA405 the earn was evaluated for another program than the membership's (caller retries)

-- Earn by rules: the breakdown computed by the caller from the rule versions in force,
-- cut to the caps under the account's lock, posted as one `earn` transaction whose
-- details keep the final breakdown. With p_action, the once-per-period claim
-- (p_action, p_period_key) is taken in the same transaction: a second claim is LA410.
-- When caps leave nothing, nothing is posted (transaction_id NULL) but a claim counts.
-- In a program with tiers the earn counts towards the member's tier (p_spend: the
-- purchase amount; points: what was posted less the tier's own multiplier line).
CREATE FUNCTION ledger_earn(
    p_scope text, p_key text, p_request_hash bytea, p_client_id text,
    p_merchant_id bigint, p_member_id bigint, p_membership_id bigint,
    p_reason text, p_time_zone text, p_at timestamptz, p_breakdown jsonb, p_details jsonb,
    p_action text DEFAULT NULL, p_period_key text DEFAULT NULL, p_spend numeric DEFAULT NULL,
    p_program_id bigint DEFAULT NULL)
RETURNS TABLE (transaction_id bigint, entry_id bigint, program_id bigint, balance_after bigint,
               created_at timestamptz, replayed boolean, breakdown jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_tx bigint;
    v_final jsonb;
    v_points bigint;
    c record;
BEGIN
    SELECT * INTO v FROM ledger_credit_account(p_membership_id, p_merchant_id, p_member_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    -- The caller evaluated the rules of p_program_id (its guess, when given): check it.
    IF v.program_id <> p_program_id THEN
        RAISE EXCEPTION 'membership % is in program %, not %', p_membership_id, v.program_id,
            p_program_id USING ERRCODE = 'LA405';
    END IF;
    IF v.earn_caps <> '[]'::jsonb OR jsonb_path_exists(p_breakdown, '$.lines[*].caps[*]') THEN
        -- Caps read and count per account: its lock serialises this member's earns, and
        -- the replay is found before anything is counted again.
        PERFORM 1 FROM account WHERE id = v.account_id FOR UPDATE;
        IF EXISTS (SELECT 1 FROM ledger_transaction t
                    WHERE t.idempotency_scope = p_scope AND t.idempotency_key = p_key) THEN
            RETURN QUERY SELECT r.*, t.details -> 'breakdown'
                           FROM ledger_replay(p_scope, p_key, p_request_hash) r
                           JOIN ledger_transaction t ON t.id = r.transaction_id;
            RETURN;
        END IF;
        v_final := earn_capped(v.account_id, v.earn_caps, p_breakdown, p_at, p_time_zone, true);
    ELSE
        v_final := p_breakdown;
    END IF;
    v_points := (v_final ->> 'points')::bigint;
    IF v_points > 0 THEN
        v_tx := ledger_claim('earn', p_scope, p_key, p_request_hash, p_client_id, v.member_id,
                             p_reason, p_details || jsonb_build_object('breakdown', v_final));
        IF v_tx IS NULL THEN  -- the key is taken: a replay, or a reuse for another request
            RETURN QUERY SELECT r.*, t.details -> 'breakdown'
                           FROM ledger_replay(p_scope, p_key, p_request_hash) r
                           JOIN ledger_transaction t ON t.id = r.transaction_id;
            RETURN;
        END IF;
    END IF;
    -- Replays have returned: they answer even after the membership closed.
    IF NOT v.active THEN
        RAISE EXCEPTION 'program or membership is not active' USING ERRCODE = 'LA423';
    END IF;
    IF p_action IS NOT NULL THEN
        INSERT INTO action_claim (membership_id, action, period_key, transaction_id)
        VALUES (p_membership_id, p_action, p_period_key, v_tx)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the action % was already rewarded (%)', p_action, p_period_key
                USING ERRCODE = 'LA410';
        END IF;
    END IF;
    IF v_tx IS NULL THEN
        RETURN QUERY SELECT NULL::bigint, NULL::bigint, v.program_id, NULL::bigint, now(), false,
                            v_final;
        RETURN;
    END IF;

    SELECT * INTO c FROM ledger_credit(
        v_tx, v.account_id, v.issued_id, v.program_id, v.member_id, v_points,
        now() + make_interval(days => v.pending_days),
        lot_expiry(v.expiry_policy, v.expiry_value, now(), p_time_zone));

    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.earned', v.merchant_id, v.member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', p_membership_id,
                               'program_id', v.program_id, 'points', v_points,
                               'debt_repaid', c.repaid, 'balance_after', c.balance_after));

    IF EXISTS (SELECT 1 FROM tier_ladder l WHERE l.program_id = v.program_id) THEN
        PERFORM tier_record_activity(
            p_membership_id, v_tx, p_at, coalesce(p_spend, 0),
            greatest(v_points - coalesce((SELECT sum((line ->> 'points')::bigint)
                                            FROM jsonb_array_elements(v_final -> 'lines') line
                                           WHERE line ->> 'kind' = 'tier'), 0), 0)::bigint);
    END IF;

    RETURN QUERY SELECT v_tx, c.entry_id, v.program_id, c.balance_after, now(), false, v_final;
END $$;

-- A referral: the referee's and the referrer's earns (keys p_key and p_key || '/referrer')
-- and the referral itself, all or nothing. Refused (LA422) for a self-referral (one
-- person on both sides) or across programs; LA410 when the referee was already
-- referred, or referred the referrer (mutual referral).
CREATE FUNCTION ledger_referral(
    p_scope text, p_key text, p_request_hash bytea, p_client_id text, p_merchant_id bigint,
    p_referee_membership_id bigint, p_referrer_membership_id bigint, p_reason text,
    p_time_zone text, p_at timestamptz, p_referee_breakdown jsonb,
    p_referrer_breakdown jsonb, p_details jsonb)
RETURNS TABLE (side text, transaction_id bigint, entry_id bigint, program_id bigint,
               balance_after bigint, created_at timestamptz, replayed boolean, breakdown jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_referee record;
    v_referrer record;
    v_existing record;
    e1 record;
    e2 record;
BEGIN
    SELECT m.member_id, m.program_id INTO v_referee
      FROM membership m JOIN program p ON p.id = m.program_id
     WHERE m.id = p_referee_membership_id AND p.merchant_id = p_merchant_id;
    SELECT m.member_id, m.program_id INTO v_referrer
      FROM membership m JOIN program p ON p.id = m.program_id
     WHERE m.id = p_referrer_membership_id AND p.merchant_id = p_merchant_id;
    IF v_referee IS NULL OR v_referrer IS NULL THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    IF v_referee.member_id = v_referrer.member_id THEN
        RAISE EXCEPTION 'a member cannot refer themself' USING ERRCODE = 'LA422';
    END IF;
    IF v_referee.program_id <> v_referrer.program_id THEN
        RAISE EXCEPTION 'referrer and referee are members of different programs'
            USING ERRCODE = 'LA422';
    END IF;
    IF EXISTS (SELECT 1 FROM referral r
                WHERE r.referee_membership_id = p_referrer_membership_id
                  AND r.referrer_membership_id = p_referee_membership_id) THEN
        RAISE EXCEPTION 'the referrer was referred by this member (mutual referral)'
            USING ERRCODE = 'LA410';
    END IF;

    SELECT * INTO e1 FROM ledger_earn(
        p_scope, p_key, p_request_hash, p_client_id, p_merchant_id, NULL,
        p_referee_membership_id, p_reason, p_time_zone, p_at, p_referee_breakdown, p_details);
    SELECT * INTO e2 FROM ledger_earn(
        p_scope, p_key || '/referrer', p_request_hash, p_client_id, p_merchant_id, NULL,
        p_referrer_membership_id, p_reason, p_time_zone, p_at, p_referrer_breakdown, p_details);

    INSERT INTO referral (referee_membership_id, referrer_membership_id, transaction_id)
    VALUES (p_referee_membership_id, p_referrer_membership_id, e1.transaction_id)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO v_existing FROM referral r
         WHERE r.referee_membership_id = p_referee_membership_id;
        -- The same referral sent again is a replay; any other is a repeat referral.
        IF v_existing.referrer_membership_id <> p_referrer_membership_id
           OR NOT (coalesce(e1.replayed, false) OR coalesce(e2.replayed, false)
                   OR (e1.transaction_id IS NULL AND e2.transaction_id IS NULL)) THEN
            RAISE EXCEPTION 'the member was already referred' USING ERRCODE = 'LA410';
        END IF;
    END IF;
    RETURN QUERY SELECT 'referee', e1.transaction_id, e1.entry_id, e1.program_id,
                        e1.balance_after, e1.created_at, e1.replayed, e1.breakdown
                 UNION ALL
                 SELECT 'referrer', e2.transaction_id, e2.entry_id, e2.program_id,
                        e2.balance_after, e2.created_at, e2.replayed, e2.breakdown;
END $$;

-- Refund (part of) a purchase: claw back floor(earned × refunded so far / order amount)
-- less what earlier refunds of the order clawed back, so a full refund takes back
-- exactly what the order earned. Points come from the order's own lots first (pending
-- ones included: that is the returns window), then, under the `debt` policy, from the
-- member's other spendable points, and what is still missing becomes clawback debt; under
-- `write_off` the missing points are absorbed by the adjustment account. Held points
-- are never taken. Idempotent per (merchant, refund id). A refund that claws back no
-- point posts nothing, so it does not lower the member's qualifying spend either.
CREATE FUNCTION ledger_reverse(
    p_merchant_id bigint, p_refund_id text, p_request_hash bytea, p_client_id text,
    p_order_scope text, p_order_id text, p_amount numeric, p_reason text)
RETURNS TABLE (refund_id bigint, transaction_id bigint, entry_id bigint,
               membership_id bigint, program_id bigint, balance_after bigint, debt_after bigint,
               refunded numeric, clawback bigint, taken bigint, debt bigint,
               written_off bigint, created_at timestamptz, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_earn record;
    v_account record;
    v_prior record;
    v_refund purchase_refund;
    v_tx bigint;
    v_entry bigint;
    v_clawback bigint;
    v_taken bigint := 0;
    v_from_order bigint;
    v_debt bigint := 0;
    v_written_off bigint := 0;
    v_consumed bigint;
BEGIN
    SELECT t.id, (t.details ->> 'amount')::numeric AS amount,
           coalesce((t.details ->> 'occurred_at')::timestamptz, t.created_at) AS occurred_at,
           p.account_id, p.program_id,
           p.member_id, p.amount AS points, pr.clawback_policy, pr.merchant_id,
           a.membership_id
      INTO v_earn
      FROM ledger_transaction t
      JOIN posting p ON p.transaction_id = t.id AND p.balance_after IS NOT NULL AND p.amount > 0
      JOIN account a ON a.id = p.account_id
      JOIN program pr ON pr.id = p.program_id
     WHERE t.idempotency_scope = p_order_scope AND t.idempotency_key = p_order_id
       AND t.kind = 'earn'
     ORDER BY p.id
     LIMIT 1;
    IF NOT FOUND OR v_earn.merchant_id <> p_merchant_id THEN
        RAISE EXCEPTION 'no earn is recorded for order %', p_order_id USING ERRCODE = 'LA414';
    END IF;

    -- The account's lock serialises this order's refunds with every movement of its lots.
    SELECT a.balance, a.held, a.debt INTO v_account
      FROM account a WHERE a.id = v_earn.account_id FOR UPDATE;

    SELECT * INTO v_refund FROM purchase_refund r
     WHERE r.merchant_id = p_merchant_id AND r.refund_id = p_refund_id;
    IF FOUND THEN
        IF v_refund.request_hash IS DISTINCT FROM p_request_hash THEN
            RAISE EXCEPTION 'refund id % was already used for a different refund', p_refund_id
                USING ERRCODE = 'LA409';
        END IF;
        RETURN QUERY
        SELECT v_refund.id, v_refund.transaction_id, p.id, v_earn.membership_id,
               v_earn.program_id, p.balance_after, v_account.debt, v_refund.amount,
               v_refund.clawback, v_refund.taken, v_refund.debt, v_refund.written_off,
               v_refund.created_at, true
          FROM (SELECT 1) one
          LEFT JOIN posting p ON p.transaction_id = v_refund.transaction_id
                             AND p.balance_after IS NOT NULL
         ORDER BY p.id LIMIT 1;
        RETURN;
    END IF;

    SELECT coalesce(sum(r.amount), 0) AS amount, coalesce(sum(r.clawback), 0) AS clawback
      INTO v_prior
      FROM purchase_refund r WHERE r.earn_transaction_id = v_earn.id;
    IF v_prior.amount + p_amount > v_earn.amount THEN
        RAISE EXCEPTION 'refunds of order % would total % but the order was %', p_order_id,
            v_prior.amount + p_amount, v_earn.amount USING ERRCODE = 'LA422';
    END IF;
    v_clawback := floor(v_earn.points * (v_prior.amount + p_amount) / v_earn.amount)::bigint
                  - v_prior.clawback;

    IF v_clawback > 0 THEN
        v_tx := ledger_claim('reverse', 'refund:' || p_merchant_id, p_refund_id,
                             p_request_hash, p_client_id, v_earn.member_id, p_reason,
                             jsonb_build_object('order_id', p_order_id, 'refund_id', p_refund_id,
                                                'refund_amount', p_amount));
        IF v_tx IS NULL THEN
            RAISE EXCEPTION 'concurrent refund with the same id; retry' USING ERRCODE = '40001';
        END IF;

        -- What can be taken: the order's lots, then (debt policy) the other spendable
        -- lots soonest-expiring first, never below what is held.
        v_taken := least(v_clawback, v_account.balance - v_account.held);
        WITH candidates AS (
            SELECT l.id, l.remaining, l.transaction_id = v_earn.id AS own,
                   l.expires_at
              FROM lot l
             WHERE l.account_id = v_earn.account_id AND l.remaining > 0
               AND (l.transaction_id = v_earn.id
                    OR (v_earn.clawback_policy = 'debt' AND l.available_at <= now()
                        AND (l.expires_at IS NULL OR l.expires_at > now())))
        ), ordered AS (
            SELECT c.id, c.remaining,
                   coalesce(sum(c.remaining) OVER (
                       ORDER BY c.own DESC, c.expires_at NULLS LAST, c.id
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
              FROM candidates c
        ), consumed AS (
            UPDATE lot SET remaining = lot.remaining - least(o.remaining, v_taken - o.before)
              FROM ordered o
             WHERE lot.id = o.id AND o.before < v_taken
            RETURNING lot.id, least(o.remaining, v_taken - o.before) AS points
        )
        INSERT INTO lot_consumption (transaction_id, lot_id, points)
        SELECT v_tx, consumed.id, consumed.points FROM consumed;
        SELECT coalesce(sum(lc.points), 0) INTO v_consumed
          FROM lot_consumption lc WHERE lc.transaction_id = v_tx;
        v_taken := v_consumed;
        IF v_earn.clawback_policy = 'debt' THEN
            v_debt := v_clawback - v_taken;
        ELSE
            v_written_off := v_clawback - v_taken;
        END IF;

        UPDATE account SET balance = account.balance - v_taken,
                           debt = account.debt + v_debt
         WHERE id = v_earn.account_id;

        WITH legs AS (
            INSERT INTO posting
                (transaction_id, account_id, program_id, member_id, amount, balance_after)
            SELECT v_tx, leg.account_id, v_earn.program_id, v_earn.member_id, leg.amount,
                   leg.balance_after
              FROM (VALUES (0, v_earn.account_id, -v_taken, v_account.balance - v_taken),
                           (1, (SELECT s.id FROM account s
                                 WHERE s.program_id = v_earn.program_id AND s.kind = 'issued'
                                   AND s.membership_id IS NULL), v_clawback, NULL::bigint),
                           (2, (SELECT s.id FROM account s
                                 WHERE s.program_id = v_earn.program_id AND s.kind = 'clawback'
                                   AND s.membership_id IS NULL), -v_debt, NULL::bigint),
                           (3, (SELECT s.id FROM account s
                                 WHERE s.program_id = v_earn.program_id AND s.kind = 'adjustment'
                                   AND s.membership_id IS NULL), -v_written_off, NULL::bigint))
                   AS leg (n, account_id, amount, balance_after)
             WHERE leg.amount <> 0
             ORDER BY leg.n
            RETURNING id, account_id
        )
        SELECT min(legs.id) INTO v_entry FROM legs WHERE legs.account_id = v_earn.account_id;

        INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
        VALUES ('points.reversed', p_merchant_id, v_earn.member_id,
                jsonb_build_object('transaction_id', v_tx, 'membership_id', v_earn.membership_id,
                                   'program_id', v_earn.program_id, 'order_id', p_order_id,
                                   'refund_id', p_refund_id, 'clawback', v_clawback,
                                   'taken', v_taken, 'debt', v_debt,
                                   'written_off', v_written_off));

        -- The refund undoes the purchase's tier contribution, at the purchase's time so
        -- both leave the rolling window together.
        IF EXISTS (SELECT 1 FROM tier_ladder l WHERE l.program_id = v_earn.program_id) THEN
            PERFORM tier_record_activity(v_earn.membership_id, v_tx, v_earn.occurred_at,
                                         -p_amount, -v_clawback);
        END IF;
    ELSE
        v_clawback := 0;
    END IF;

    INSERT INTO purchase_refund AS r
        (merchant_id, refund_id, earn_transaction_id, request_hash, amount, clawback, taken,
         debt, written_off, transaction_id)
    VALUES (p_merchant_id, p_refund_id, v_earn.id, p_request_hash, p_amount, v_clawback,
            v_taken, v_debt, v_written_off, v_tx)
    RETURNING r.* INTO v_refund;

    RETURN QUERY SELECT v_refund.id, v_tx, v_entry, v_earn.membership_id, v_earn.program_id,
                        v_account.balance - v_taken, v_account.debt + v_debt, p_amount,
                        v_clawback, v_taken, v_debt, v_written_off, v_refund.created_at, false;
END $$;
