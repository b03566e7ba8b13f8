-- Undo migrations/sql/0009_rewards.sql (the tables go with the migration).
DROP FUNCTION points_gift(text, text, bytea, text, bigint, bigint, bigint, bigint, bigint, text, text);
DROP FUNCTION reward_redeem_coupon(text, bigint, text, text);
DROP FUNCTION reward_release_expired(timestamptz, integer);
DROP FUNCTION reward_cancel(bigint, bigint, bigint);
DROP FUNCTION reward_restock(bigint, integer, bigint);
DROP FUNCTION reward_complete(bigint, bigint, text);
DROP FUNCTION reward_capture(redemption, bigint, text);
DROP FUNCTION reward_fulfil(bigint, bigint, text[], text, text);
DROP FUNCTION reward_redemption_locked(bigint, bigint, bigint);
DROP FUNCTION reward_reserve(text, text, bytea, bigint, bigint, bigint, bigint, text);
DROP FUNCTION reward_period_start(text, timestamptz, text);
DROP TRIGGER hold_reward_guard ON hold;
DROP FUNCTION reward_hold_guard();
DROP TRIGGER gift_append_only ON gift;
DROP TRIGGER reward_version_append_only ON reward_version;

-- ledger_hold_release_expired as 0006 wrote it.
DROP FUNCTION ledger_hold_release_expired(timestamptz, integer);
CREATE FUNCTION ledger_hold_release_expired(p_now timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_accounts bigint[];
    v_released integer;
BEGIN
    SELECT array_agg(locked.id) INTO v_accounts
      FROM (SELECT a.id FROM account a
             WHERE a.id IN (SELECT h.account_id FROM hold h
                             WHERE h.status = 'authorized' AND h.expires_at <= p_now
                             ORDER BY h.expires_at, h.id LIMIT p_limit)
             ORDER BY a.id FOR UPDATE SKIP LOCKED) locked;
    IF v_accounts IS NULL THEN
        RETURN 0;
    END IF;
    WITH released AS (
        UPDATE hold SET status = 'expired', closed_at = now()
         WHERE account_id = ANY (v_accounts) AND status = 'authorized' AND expires_at <= p_now
        RETURNING account_id, points
    ), freed AS (
        UPDATE account SET held = account.held - totals.points
          FROM (SELECT account_id, sum(points) AS points FROM released GROUP BY account_id) totals
         WHERE account.id = totals.account_id
        RETURNING account.id
    )
    SELECT count(*) INTO v_released FROM released;
    RETURN v_released;
END $$;
