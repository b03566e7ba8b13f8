-- Two-phase holds (migration 0006): authorize reserves points in the account's `held`,
-- capture spends up to them, void and expiry release them.
--
-- A hold changes only under its member account's row lock (as lots do), taken first:
-- captures, voids and the release job never deadlock, and `held` always equals the
-- points of the account's authorized holds (verify checks it).
--
-- SQLSTATEs as in 0001/0005; LA423 here also means "the hold is no longer authorized".

-- The open points of an account, soonest-expiring first, consumed for transaction p_tx.
-- Returns the points consumed (less than asked when the lots do not cover them). With
-- p_expired_too, lots past their expiry count too: points a hold reserved stay the hold's
-- when their lot's date passes (the expiry job leaves held points alone).
CREATE FUNCTION ledger_consume_lots(p_tx bigint, p_account_id bigint, p_points bigint,
                                    p_expired_too boolean DEFAULT false)
RETURNS bigint
LANGUAGE sql AS $$
    WITH open_lots AS (
        SELECT l.id, l.remaining,
               coalesce(sum(l.remaining) OVER (ORDER BY l.expires_at NULLS LAST, l.id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
          FROM lot l
         WHERE l.account_id = p_account_id AND l.remaining > 0 AND l.available_at <= now()
           AND (p_expired_too OR l.expires_at IS NULL OR l.expires_at > now())
    ), taken AS (
        SELECT o.id, least(o.remaining, p_points - o.before) AS points
          FROM open_lots o
         WHERE o.before < p_points
    ), consumed AS (
        UPDATE lot SET remaining = lot.remaining - taken.points
          FROM taken
         WHERE lot.id = taken.id
        RETURNING lot.id, taken.points
    ), recorded AS (
        INSERT INTO lot_consumption (transaction_id, lot_id, points)
        SELECT p_tx, consumed.id, consumed.points FROM consumed
        RETURNING points
    )
    SELECT coalesce(sum(points), 0)::bigint FROM recorded
$$;

-- Reserve p_points of a membership for p_ttl_seconds. Idempotent per (scope, key): a
-- replay returns the hold as it is now; the key with another request is LA409.
CREATE FUNCTION ledger_hold_authorize(
    p_scope text, p_key text, p_request_hash bytea, p_merchant_id bigint, p_member_id bigint,
    p_membership_id bigint, p_points bigint, p_kind text, p_ttl_seconds integer, p_reason text)
RETURNS SETOF hold
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_hold hold;
    v_held bigint;
    v_spendable bigint;
BEGIN
    SELECT * INTO v FROM ledger_member_account(p_membership_id, p_merchant_id, p_member_id,
                                               'redeemed');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    PERFORM 1 FROM account WHERE id = v.account_id FOR UPDATE;
    SELECT * INTO v_hold FROM hold h
     WHERE h.idempotency_scope = p_scope AND h.idempotency_key = p_key;
    IF FOUND THEN
        IF v_hold.request_hash IS DISTINCT FROM p_request_hash THEN
            RAISE EXCEPTION 'idempotency key % was already used for a different request', p_key
                USING ERRCODE = 'LA409';
        END IF;
        RETURN NEXT v_hold;
        RETURN;
    END IF;
    IF NOT v.active THEN
        RAISE EXCEPTION 'program or membership is not active' USING ERRCODE = 'LA423';
    END IF;

    UPDATE account SET held = account.held + p_points
     WHERE id = v.account_id AND account.balance - account.held >= p_points
    RETURNING account.held INTO v_held;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient points' USING ERRCODE = 'LA402';
    END IF;
    -- Pending and expired-but-not-swept lots are in the balance, not spendable.
    SELECT coalesce(sum(l.remaining), 0) INTO v_spendable
      FROM lot l
     WHERE l.account_id = v.account_id AND l.remaining > 0
       AND l.available_at <= now() AND (l.expires_at IS NULL OR l.expires_at > now());
    IF v_spendable < v_held THEN
        RAISE EXCEPTION 'insufficient points' USING ERRCODE = 'LA402';
    END IF;

    INSERT INTO hold (account_id, membership_id, program_id, member_id, kind, points,
                      expires_at, idempotency_scope, idempotency_key, request_hash, reason)
    VALUES (v.account_id, p_membership_id, v.program_id, v.member_id, p_kind, p_points,
            now() + make_interval(secs => p_ttl_seconds), p_scope, p_key, p_request_hash,
            p_reason)
    RETURNING * INTO v_hold;
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.held', v.merchant_id, v.member_id,
            jsonb_build_object('hold_id', v_hold.id, 'membership_id', p_membership_id,
                               'program_id', v.program_id, 'points', p_points,
                               'expires_at', v_hold.expires_at));
    RETURN NEXT v_hold;
END $$;

-- The hold p_hold_id of one of the merchant's programs (and the member's, when given),
-- with its account locked: every change of a hold happens under that lock.
CREATE FUNCTION ledger_hold_locked(p_hold_id bigint, p_merchant_id bigint, p_member_id bigint)
RETURNS hold
LANGUAGE plpgsql AS $$
DECLARE
    v_hold hold;
BEGIN
    SELECT h.* INTO v_hold FROM hold h JOIN program p ON p.id = h.program_id
     WHERE h.id = p_hold_id AND (p_merchant_id IS NULL OR p.merchant_id = p_merchant_id)
       AND (p_member_id IS NULL OR h.member_id = p_member_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold not found' USING ERRCODE = 'LA404';
    END IF;
    PERFORM 1 FROM account WHERE id = v_hold.account_id FOR UPDATE;
    SELECT * INTO v_hold FROM hold WHERE id = p_hold_id;  -- as it is under the lock
    RETURN v_hold;
END $$;

-- Spend p_points (NULL: all) of an authorized hold, releasing the rest. Capturing again
-- with the same points returns the capture; with other points it is LA409.
CREATE FUNCTION ledger_hold_capture(
    p_hold_id bigint, p_merchant_id bigint, p_member_id bigint, p_points bigint,
    p_client_id text)
RETURNS TABLE (hold_id bigint, transaction_id bigint, entry_id bigint, balance_after bigint,
               replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_hold hold;
    v_points bigint;
    v_tx bigint;
    v_balance bigint;
    v_entry bigint;
    v_consumed bigint;
    v_redeemed bigint;
    v_merchant bigint;
BEGIN
    v_hold := ledger_hold_locked(p_hold_id, p_merchant_id, p_member_id);
    v_points := coalesce(p_points, v_hold.points);
    IF v_hold.status = 'captured' THEN
        IF v_hold.captured <> v_points THEN
            RAISE EXCEPTION 'hold % was captured for % points', p_hold_id, v_hold.captured
                USING ERRCODE = 'LA409';
        END IF;
        RETURN QUERY SELECT v_hold.id, v_hold.transaction_id, p.id, p.balance_after, true
                       FROM posting p
                      WHERE p.transaction_id = v_hold.transaction_id
                        AND p.balance_after IS NOT NULL;
        RETURN;
    END IF;
    IF v_hold.status <> 'authorized' OR v_hold.expires_at <= now() THEN
        RAISE EXCEPTION 'hold % is %', p_hold_id,
            CASE WHEN v_hold.status = 'authorized' THEN 'expired' ELSE v_hold.status END
            USING ERRCODE = 'LA423';
    END IF;
    IF v_points < 1 OR v_points > v_hold.points THEN
        RAISE EXCEPTION 'a capture takes 1 to % points of this hold', v_hold.points
            USING ERRCODE = 'LA422';
    END IF;

    v_tx := ledger_claim('spend', 'hold', v_hold.id::text, NULL, p_client_id, v_hold.member_id,
                         v_hold.reason, jsonb_build_object('hold_id', v_hold.id));
    UPDATE account SET held = account.held - v_hold.points,
                       balance = account.balance - v_points
     WHERE id = v_hold.account_id
    RETURNING account.balance INTO v_balance;
    v_consumed := ledger_consume_lots(v_tx, v_hold.account_id, v_points, true);
    IF v_consumed <> v_points THEN
        RAISE EXCEPTION 'lots cover % of % held points', v_consumed, v_points
            USING ERRCODE = 'LA500';
    END IF;
    SELECT s.id, p.merchant_id INTO v_redeemed, v_merchant
      FROM account s JOIN program p ON p.id = s.program_id
     WHERE s.program_id = v_hold.program_id AND s.kind = 'redeemed' AND s.membership_id IS NULL;
    v_entry := ledger_post(v_tx, v_hold.account_id, v_redeemed, v_hold.program_id,
                           v_hold.member_id, -v_points, v_balance);
    UPDATE hold SET status = 'captured', captured = v_points, transaction_id = v_tx,
                    closed_at = now()
     WHERE id = v_hold.id;
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.spent', v_merchant, v_hold.member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', v_hold.membership_id,
                               'program_id', v_hold.program_id, 'points', v_points,
                               'hold_id', v_hold.id, 'balance_after', v_balance));
    RETURN QUERY SELECT v_hold.id, v_tx, v_entry, v_balance, false;
END $$;

-- Release an authorized hold. Voiding a voided or expired hold changes nothing (its
-- points are already free); a captured hold is LA423 (refund it instead).
CREATE FUNCTION ledger_hold_void(p_hold_id bigint, p_merchant_id bigint, p_member_id bigint)
RETURNS SETOF hold
LANGUAGE plpgsql AS $$
DECLARE
    v_hold hold;
BEGIN
    v_hold := ledger_hold_locked(p_hold_id, p_merchant_id, p_member_id);
    IF v_hold.status = 'captured' THEN
        RAISE EXCEPTION 'hold % is captured: refund it instead', p_hold_id USING ERRCODE = 'LA423';
    END IF;
    IF v_hold.status = 'authorized' THEN
        UPDATE account SET held = account.held - v_hold.points WHERE id = v_hold.account_id;
        UPDATE hold SET status = 'voided', closed_at = now() WHERE id = v_hold.id
        RETURNING * INTO v_hold;
    END IF;
    RETURN NEXT v_hold;
END $$;

-- Release up to p_limit authorized holds past their expiry: accounts locked in id order
-- with SKIP LOCKED (a busy account waits for the next pass), as the expiry job does.
-- Returns how many holds were released.
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

-- Give back p_points of a captured hold's spend (the bill was refunded): refunds of one
-- hold never exceed what it captured. The points are a new lot under the program's
-- expiry policy, repaying clawback debt first like every credit. Idempotent per
-- (merchant, refund id).
CREATE FUNCTION ledger_hold_refund(
    p_hold_id bigint, p_merchant_id bigint, p_refund_id text, p_request_hash bytea,
    p_points bigint, p_client_id text, p_time_zone text)
RETURNS TABLE (transaction_id bigint, entry_id bigint, balance_after bigint, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_hold hold;
    v_program record;
    v_refunded bigint;
    v_tx bigint;
    c record;
BEGIN
    v_hold := ledger_hold_locked(p_hold_id, p_merchant_id, NULL);
    -- As ledger_claim, with the spend it gives back (set at insert: transactions are facts).
    INSERT INTO ledger_transaction
        (kind, member_id, client_id, idempotency_scope, idempotency_key, request_hash, reason,
         details, reverses_id)
    VALUES ('refund', v_hold.member_id, p_client_id, 'hold-refund:' || p_merchant_id,
            p_refund_id, p_request_hash, 'refund of hold ' || p_hold_id,
            jsonb_build_object('hold_id', p_hold_id, 'refund_id', p_refund_id),
            v_hold.transaction_id)
    ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING
    RETURNING id INTO v_tx;
    IF v_tx IS NULL THEN
        RETURN QUERY SELECT r.transaction_id, r.entry_id, r.balance_after, true
                       FROM ledger_replay('hold-refund:' || p_merchant_id, p_refund_id,
                                          p_request_hash) r;
        RETURN;
    END IF;
    IF v_hold.status <> 'captured' THEN
        RAISE EXCEPTION 'hold % is %: only a captured hold is refunded', p_hold_id,
            v_hold.status USING ERRCODE = 'LA423';
    END IF;
    SELECT coalesce(sum(p.amount), 0) INTO v_refunded
      FROM ledger_transaction t
      JOIN posting p ON p.transaction_id = t.id AND p.account_id = v_hold.account_id
     WHERE t.reverses_id = v_hold.transaction_id AND t.kind = 'refund' AND t.id <> v_tx
       AND p.amount > 0;
    IF v_refunded + p_points > v_hold.captured THEN
        RAISE EXCEPTION 'refunds of hold % would give back % points of the % it spent',
            p_hold_id, v_refunded + p_points, v_hold.captured USING ERRCODE = 'LA422';
    END IF;
    SELECT pr.expiry_policy, pr.expiry_value, pr.pending_days, s.id AS redeemed_id,
           pr.merchant_id
      INTO v_program
      FROM program pr JOIN account s ON s.program_id = pr.id AND s.kind = 'redeemed'
                                    AND s.membership_id IS NULL
     WHERE pr.id = v_hold.program_id;
    SELECT * INTO c FROM ledger_credit(
        v_tx, v_hold.account_id, v_program.redeemed_id, v_hold.program_id, v_hold.member_id,
        p_points, now(), lot_expiry(v_program.expiry_policy, v_program.expiry_value, now(),
                                    p_time_zone));
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.refunded', v_program.merchant_id, v_hold.member_id,
            jsonb_build_object('transaction_id', v_tx, 'hold_id', p_hold_id,
                               'membership_id', v_hold.membership_id, 'points', p_points,
                               'balance_after', c.balance_after));
    RETURN QUERY SELECT v_tx, c.entry_id, c.balance_after, false;
END $$;
