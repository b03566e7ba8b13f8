-- Undo migrations/sql/0003_validity.sql: its functions go, the 0001 ledger_award returns.
DROP FUNCTION earn_preview(bigint, jsonb, timestamptz, text);
DROP FUNCTION earn_capped(bigint, jsonb, jsonb, timestamptz, text, boolean);
DROP FUNCTION earn_cap_count(bigint, text, jsonb, timestamptz, text, bigint);
DROP FUNCTION earn_cap_room(bigint, text, jsonb, timestamptz, text);
DROP FUNCTION ledger_award(text, text, bytea, text, bigint, bigint, bigint, bigint, text, text, text, jsonb);
DROP FUNCTION ledger_credit(bigint, bigint, bigint, bigint, bigint, bigint, timestamptz, timestamptz);
DROP FUNCTION ledger_credit_account(bigint, bigint, bigint);

-- As in 0001_ledger.sql:
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
