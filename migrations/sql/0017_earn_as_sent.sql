-- Earns answer their breakdown only when caps changed it (migration 0017).
--
-- ledger_earn returned the final breakdown of every earn, about 1 KB of jsonb for a
-- purchase under five rules and two promotions, which PostgreSQL serialised and the
-- application parsed back into the breakdown it had just sent: some 30 µs of the
-- application's CPU per recordPurchase (bench/RESULTS.md, 2026-11-26). Now a NULL
-- breakdown means "as sent". Replays still answer the stored breakdown, and so does an
-- earn under caps, which may have cut it. The body is 0005's otherwise.

CREATE OR REPLACE FUNCTION ledger_earn(
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
    v_as_sent boolean := false;
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
        v_as_sent := true;
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
                            CASE WHEN v_as_sent THEN NULL ELSE v_final END;
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

    RETURN QUERY SELECT v_tx, c.entry_id, v.program_id, c.balance_after, now(), false,
                        CASE WHEN v_as_sent THEN NULL ELSE v_final END;
END $$;
