-- Ledger functions of migration 0003: credits that repay clawback debt first, and the
-- cap arithmetic of earns. The earns themselves, which also feed tiers, are in
-- 0005_earning.sql.

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
