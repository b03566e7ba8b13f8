-- Ledger functions of migration 0003: credits that repay clawback debt first, earns
-- by rules with caps and once-only action claims, referrals, purchase reversals.
--
-- New SQLSTATEs (see 0001_ledger.sql for the others):
--   LA410 action already rewarded in this period / member already referred
--   LA422 request not valid against the stored facts (refund above the order, self-referral…)
--   LA414 order not found (no earn recorded for it)

-- The member account a credit goes to, with what crediting needs: the program's issued
-- account, its lot policy and its earning caps. Scoped like ledger_member_account
-- (NULL merchant or member: any).
CREATE FUNCTION ledger_credit_account(p_membership_id bigint, p_merchant_id bigint,
                                      p_member_id bigint)
RETURNS TABLE (account_id bigint, member_id bigint, program_id bigint, merchant_id bigint,
               active boolean, expiry_policy text, expiry_value integer, pending_days integer,
               issued_id bigint, earn_caps jsonb)
LANGUAGE sql STABLE AS $$
    SELECT a.id, a.member_id, a.program_id, p.merchant_id,
           p.status = 'active' AND m.status = 'active',
           p.expiry_policy, p.expiry_value, p.pending_days, i.id, p.earn_caps
      FROM membership m
      JOIN program p ON p.id = m.program_id
      JOIN account a ON a.membership_id = m.id
      JOIN account i ON i.program_id = p.id AND i.kind = 'issued' AND i.membership_id IS NULL
     WHERE m.id = p_membership_id
       AND (p_merchant_id IS NULL OR p.merchant_id = p_merchant_id)
       AND (p_member_id IS NULL OR m.member_id = p_member_id)
$$;

-- Credit a member account within transaction p_tx: clawback debt is repaid first.
-- The member sees the whole credit (+points) and, when debt was repaid, a second leg
-- (-repaid) that consumes it from the new lot straight away; the clawback account
-- takes back the repaid part. Returns the +points leg (the history entry).
CREATE FUNCTION ledger_credit(
    p_tx bigint, p_account_id bigint, p_issued_id bigint,
    p_program_id bigint, p_member_id bigint, p_points bigint,
    p_available_at timestamptz, p_expires_at timestamptz)
RETURNS TABLE (entry_id bigint, balance_after bigint, repaid bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_repaid bigint;
    v_entry bigint;
    v_lot bigint;
BEGIN
    UPDATE account
       SET debt = account.debt - least(account.debt, p_points),
           balance = account.balance + p_points - least(account.debt, p_points)
     WHERE id = p_account_id
    RETURNING new.balance, old.debt - new.debt INTO v_balance, v_repaid;

    IF v_repaid = 0 THEN
        v_entry := ledger_post(p_tx, p_account_id, p_issued_id, p_program_id, p_member_id,
                               p_points, v_balance);
    ELSE
        -- One statement (the balance trigger checks whole statements); rows in this
        -- order so posting ids follow the running balance.
        WITH legs AS (
            INSERT INTO posting
                (transaction_id, account_id, program_id, member_id, amount, balance_after)
            VALUES (p_tx, p_account_id, p_program_id, p_member_id, p_points,
                    v_balance + v_repaid),
                   (p_tx, p_account_id, p_program_id, p_member_id, -v_repaid, v_balance),
                   (p_tx, p_issued_id, p_program_id, p_member_id, -p_points, NULL),
                   (p_tx, (SELECT c.id FROM account c
                            WHERE c.program_id = p_program_id AND c.kind = 'clawback'
                              AND c.membership_id IS NULL),
                    p_program_id, p_member_id, v_repaid, NULL)
            RETURNING id, account_id, amount
        )
        SELECT min(legs.id) INTO v_entry
          FROM legs WHERE legs.account_id = p_account_id AND legs.amount > 0;
    END IF;

    INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount, remaining,
                     available_at, expires_at)
    VALUES (p_account_id, p_program_id, p_member_id, p_tx, p_points, p_points - v_repaid,
            p_available_at, p_expires_at)
    RETURNING id INTO v_lot;
    IF v_repaid > 0 THEN
        INSERT INTO lot_consumption (transaction_id, lot_id, points) VALUES (p_tx, v_lot, v_repaid);
    END IF;
    RETURN QUERY SELECT v_entry, v_balance, v_repaid;
END $$;

-- Award points to a membership (replaces the 0001 version: debt is repaid first).
DROP FUNCTION ledger_award(text, text, bytea, text, bigint, bigint, bigint, bigint, text, text,
                           text, jsonb);
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
    c record;
BEGIN
    SELECT * INTO v FROM ledger_credit_account(p_membership_id, p_merchant_id, p_member_id);
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

    SELECT * INTO c FROM ledger_credit(
        v_tx, v.account_id, v.issued_id, v.program_id, v.member_id, p_points,
        now() + make_interval(days => v.pending_days),
        lot_expiry(v.expiry_policy, v.expiry_value, now(), p_time_zone));

    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.earned', v.merchant_id, v.member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', p_membership_id,
                               'program_id', v.program_id, 'points', p_points,
                               'debt_repaid', c.repaid, 'balance_after', c.balance_after));

    RETURN QUERY SELECT v_tx, c.entry_id, v.program_id, c.balance_after, now(), false;
END $$;

-- Room left under one scope's caps ([{"period": "day", "points": 500}, …]) for an
-- account at p_at, periods cut in p_time_zone; NULL when the scope has no cap.
CREATE FUNCTION earn_cap_room(p_account_id bigint, p_scope text, p_caps jsonb,
                              p_at timestamptz, p_time_zone text)
RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT min(greatest((cap ->> 'points')::bigint - coalesce(n.points, 0), 0))
      FROM jsonb_array_elements(p_caps) cap
      LEFT JOIN earn_counter n
             ON n.account_id = p_account_id AND n.scope = p_scope
            AND n.period = cap ->> 'period'
            AND n.period_start = date_trunc(cap ->> 'period', p_at AT TIME ZONE p_time_zone)::date
$$;

-- Count p_points against every period of one scope's caps.
CREATE FUNCTION earn_cap_count(p_account_id bigint, p_scope text, p_caps jsonb,
                               p_at timestamptz, p_time_zone text, p_points bigint)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO earn_counter (account_id, scope, period, period_start, points)
    SELECT p_account_id, p_scope, cap ->> 'period',
           date_trunc(cap ->> 'period', p_at AT TIME ZONE p_time_zone)::date, p_points
      FROM jsonb_array_elements(p_caps) cap
     WHERE p_points > 0
    ON CONFLICT (account_id, scope, period, period_start)
    DO UPDATE SET points = earn_counter.points + excluded.points
$$;

-- The breakdown ({"points", "lines": [{rule_id, code, …, points, caps?}]}) cut to the
-- caps: each rule's lines to the rule's caps, then the total to the program's. A cut is
-- a line of kind `cap` with negative points, so the lines still add up to the total.
-- A program cut is taken from the last rules first (bonuses before base points).
-- With p_count the posted points are counted (the caller holds the account's lock).
CREATE FUNCTION earn_capped(p_account_id bigint, p_program_caps jsonb, p_breakdown jsonb,
                            p_at timestamptz, p_time_zone text, p_count boolean)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_shares jsonb;
    v_total bigint;
    v_room bigint;
    v_cut bigint;
    v_lines jsonb;
    r record;
BEGIN
    IF p_program_caps = '[]'::jsonb
       AND NOT jsonb_path_exists(p_breakdown, '$.lines[*].caps[*]') THEN
        RETURN p_breakdown;
    END IF;

    -- Each rule's share (its lines added up) and what of it fits under the rule's caps.
    SELECT jsonb_agg(to_jsonb(share)), coalesce(sum(share.kept), 0)
      INTO v_shares, v_total
      FROM (SELECT s.*,
                   CASE WHEN s.caps IS NULL THEN s.points
                        ELSE least(s.points, earn_cap_room(p_account_id, 'rule:' || s.code,
                                                           s.caps, p_at, p_time_zone))
                   END AS kept
              FROM (SELECT line ->> 'code' AS code, min(ord) AS ord,
                           sum((line ->> 'points')::bigint) AS points,
                           (array_agg(line -> 'caps') FILTER (WHERE line ? 'caps'))[1] AS caps,
                           (array_agg(line ORDER BY ord))[1] AS line
                      FROM jsonb_array_elements(p_breakdown -> 'lines')
                           WITH ORDINALITY AS l (line, ord)
                     GROUP BY line ->> 'code') s) share;
    v_room := earn_cap_room(p_account_id, 'program', p_program_caps, p_at, p_time_zone);
    v_cut := CASE WHEN v_room IS NULL THEN 0 ELSE greatest(v_total - v_room, 0) END;

    SELECT coalesce(jsonb_agg(line - 'caps' ORDER BY ord), '[]'::jsonb) INTO v_lines
      FROM jsonb_array_elements(p_breakdown -> 'lines') WITH ORDINALITY AS l (line, ord);
    FOR r IN SELECT * FROM jsonb_to_recordset(v_shares)
                 AS x (code text, ord bigint, points bigint, kept bigint, caps jsonb, line jsonb)
              WHERE x.kept < x.points ORDER BY x.ord LOOP
        v_lines := v_lines || jsonb_build_object(
            'rule_id', r.line -> 'rule_id', 'code', r.code, 'version', r.line -> 'version',
            'name', r.line -> 'name', 'kind', 'cap', 'points', r.kept - r.points,
            'detail', 'rule cap reached: ' || (
                SELECT string_agg((cap ->> 'points') || ' per ' || (cap ->> 'period'), ', ')
                  FROM jsonb_array_elements(r.caps) cap));
    END LOOP;
    IF v_cut > 0 THEN
        v_lines := v_lines || jsonb_build_object(
            'rule_id', NULL, 'code', 'program', 'version', NULL, 'name', 'program cap',
            'kind', 'cap', 'points', -v_cut,
            'detail', 'program cap reached: ' || (
                SELECT string_agg((cap ->> 'points') || ' per ' || (cap ->> 'period'), ', ')
                  FROM jsonb_array_elements(p_program_caps) cap));
    END IF;

    IF p_count THEN
        -- What each capped rule finally posted: its kept points less its share of the
        -- program cut, taken from the last rules first.
        FOR r IN
            SELECT x.code, x.caps,
                   (x.kept - least(x.kept, greatest(v_cut - coalesce(sum(x.kept) OVER (
                       ORDER BY x.ord DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
                       0)))::bigint AS posted
              FROM jsonb_to_recordset(v_shares)
                   AS x (code text, ord bigint, points bigint, kept bigint, caps jsonb)
        LOOP
            IF r.caps IS NOT NULL THEN
                PERFORM earn_cap_count(p_account_id, 'rule:' || r.code, r.caps, p_at,
                                       p_time_zone, r.posted);
            END IF;
        END LOOP;
        PERFORM earn_cap_count(p_account_id, 'program', p_program_caps, p_at, p_time_zone,
                               v_total - v_cut);
    END IF;
    RETURN jsonb_build_object('points', v_total - v_cut, 'lines', v_lines);
END $$;

-- What a preview shows: the breakdown cut to the caps as they stand, counting nothing.
CREATE FUNCTION earn_preview(p_membership_id bigint, p_breakdown jsonb, p_at timestamptz,
                             p_time_zone text)
RETURNS jsonb
LANGUAGE sql AS $$
    SELECT earn_capped(a.id, p.earn_caps, p_breakdown, p_at, p_time_zone, false)
      FROM membership m JOIN program p ON p.id = m.program_id
      JOIN account a ON a.membership_id = m.id
     WHERE m.id = p_membership_id
$$;

-- Earn by rules: the breakdown computed by the caller from the rule versions in force,
-- cut to the caps under the account's lock, posted as one `earn` transaction whose
-- details keep the final breakdown. With p_action, the once-per-period claim
-- (p_action, p_period_key) is taken in the same transaction: a second claim is LA410.
-- When caps leave nothing, nothing is posted (transaction_id NULL) but a claim counts.
CREATE FUNCTION ledger_earn(
    p_scope text, p_key text, p_request_hash bytea, p_client_id text,
    p_merchant_id bigint, p_member_id bigint, p_membership_id bigint,
    p_reason text, p_time_zone text, p_at timestamptz, p_breakdown jsonb, p_details jsonb,
    p_action text DEFAULT NULL, p_period_key text DEFAULT NULL)
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
-- are never taken. Idempotent per (merchant, refund id).
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
    SELECT t.id, (t.details ->> 'amount')::numeric AS amount, p.account_id, p.program_id,
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
