-- Lots read only as far as needed (migration 0012).
--
-- Every debit checked that the account's spendable lots cover it (a sum over all its open
-- lots), then consumed the soonest-expiring ones (a window over all its open lots): two
-- reads of every open lot, so a member who earns often and spends seldom paid for each
-- debit in proportion to the lots she holds (bench/lots.py: a spend took 1.1 ms with one
-- open lot, 3.3 ms with 1,000, 7.5 ms with 10,000). ledger_take_lots reads the open lots
-- in (expires_at, id) order on ix_lot_open and stops as soon as they cover what is taken
-- plus what must stay (the points held by holds). Every debit goes through it now:
-- ledger_debit (exchanges, partner redemptions, adjustments), ledger_spend and points_gift
-- (which kept their own copies of that debit and now call ledger_debit),
-- ledger_consume_lots (hold captures) and the spendable check of ledger_hold_authorize.

-- Take p_points of an account's open lots for transaction p_tx, soonest-expiring first
-- (lot_consumption rows), provided its spendable lots cover p_points + p_keep: false, and
-- nothing taken, when they do not. Spendable: available, and not past their expiry
-- unless p_expired_too (points a hold reserved stay the hold's when their lot's date
-- passes). Under the account's row lock, taken by the caller (lots change only under it).
CREATE FUNCTION ledger_take_lots(p_tx bigint, p_account_id bigint, p_points bigint,
                                 p_keep bigint, p_expired_too boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    -- A declared cursor is planned for its first rows (the index order of ix_lot_open);
    -- a plain FOR-IN-query loop is planned for all of them (a bitmap scan and a sort of
    -- every open lot, which is what this function is here to avoid).
    open_lots NO SCROLL CURSOR FOR
        SELECT l.id, l.remaining FROM lot l
         WHERE l.account_id = p_account_id AND l.remaining > 0 AND l.available_at <= now()
           AND (p_expired_too OR l.expires_at IS NULL OR l.expires_at > now())
         ORDER BY l.expires_at NULLS LAST, l.id;
    r record;
    v_seen bigint := 0;
    v_taken bigint := 0;
    v_take bigint;
    v_lots bigint[] := '{}';
    v_points bigint[] := '{}';
BEGIN
    IF p_points + p_keep > 0 THEN
        FOR r IN open_lots LOOP
            IF v_taken < p_points THEN
                v_take := least(r.remaining, p_points - v_taken);
                v_lots := v_lots || r.id;
                v_points := v_points || v_take;
                v_taken := v_taken + v_take;
            END IF;
            v_seen := v_seen + r.remaining;
            EXIT WHEN v_seen >= p_points + p_keep;
        END LOOP;
    END IF;
    IF v_seen < p_points + p_keep THEN
        RETURN false;
    END IF;
    IF v_taken > 0 THEN
        WITH taken AS (SELECT * FROM unnest(v_lots, v_points) AS t (lot_id, points)),
             consumed AS (UPDATE lot SET remaining = lot.remaining - taken.points
                            FROM taken WHERE lot.id = taken.lot_id
                          RETURNING lot.id, taken.points)
        INSERT INTO lot_consumption (transaction_id, lot_id, points)
        SELECT p_tx, consumed.id, consumed.points FROM consumed;
    END IF;
    RETURN true;
END $$;

-- As 0006: the points consumed (p_points, or 0 when the lots do not cover them).
CREATE OR REPLACE FUNCTION ledger_consume_lots(p_tx bigint, p_account_id bigint,
                                               p_points bigint,
                                               p_expired_too boolean DEFAULT false)
RETURNS bigint
LANGUAGE sql AS $$
    SELECT CASE WHEN ledger_take_lots(p_tx, p_account_id, p_points, 0, p_expired_too)
                THEN p_points ELSE 0 END
$$;

-- As 0007: debit p_points of spendable points from a member account within transaction
-- p_tx, lots soonest-expiring first; the balance after. LA402 when the account's balance
-- less held, or its spendable lots less held, do not cover them.
CREATE OR REPLACE FUNCTION ledger_debit(p_tx bigint, p_account_id bigint, p_points bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_held bigint;
BEGIN
    UPDATE account SET balance = account.balance - p_points
     WHERE id = p_account_id AND account.balance - account.held >= p_points
    RETURNING account.balance, account.held INTO v_balance, v_held;
    IF NOT FOUND OR NOT ledger_take_lots(p_tx, p_account_id, p_points, v_held) THEN
        RAISE EXCEPTION 'insufficient points' USING ERRCODE = 'LA402';
    END IF;
    RETURN v_balance;
END $$;

-- As 0001, debited by ledger_debit.
CREATE OR REPLACE FUNCTION ledger_spend(
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

    -- The conditional debit of the account row (concurrent spends never overdraw; its
    -- lock guards the lots), then the lots, read only as far as needed.
    v_balance := ledger_debit(v_tx, v.account_id, p_points);

    v_entry := ledger_post(v_tx, v.account_id, v.system_account_id, v.program_id, v.member_id,
                           -p_points, v_balance);

    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.spent', v.merchant_id, v.member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', p_membership_id,
                               'program_id', v.program_id, 'points', p_points,
                               'balance_after', v_balance));

    RETURN QUERY SELECT v_tx, v_entry, v.program_id, v_balance, now(), false;
END $$;


-- As 0006, the spendable check by ledger_take_lots.
CREATE OR REPLACE FUNCTION ledger_hold_authorize(
    p_scope text, p_key text, p_request_hash bytea, p_merchant_id bigint, p_member_id bigint,
    p_membership_id bigint, p_points bigint, p_kind text, p_ttl_seconds integer, p_reason text)
RETURNS SETOF hold
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_hold hold;
    v_held bigint;
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
    -- Pending and expired-but-not-swept lots are in the balance, not spendable: the
    -- spendable ones must cover every held point (read only as far as they do).
    IF NOT ledger_take_lots(NULL, v.account_id, 0, v_held) THEN
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

-- As 0009, debited by ledger_debit.
CREATE OR REPLACE FUNCTION points_gift(
    p_scope text, p_key text, p_request_hash bytea, p_client_id text, p_merchant_id bigint,
    p_member_id bigint, p_from_membership_id bigint, p_to_membership_id bigint,
    p_points bigint, p_message text, p_time_zone text)
RETURNS TABLE (transaction_id bigint, entry_id bigint, balance_after bigint,
               recipient_entry_id bigint, created_at timestamptz, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_from record;
    v_to record;
    v_policy gift_policy;
    v_tx bigint;
    v_sent bigint;
    v_balance bigint;
    v_to_balance bigint;
    v_repaid bigint;
    v_expires timestamptz;
    v_never boolean;
    v_entry bigint;
    v_to_entry bigint;
    v_lot bigint;
BEGIN
    SELECT * INTO v_from FROM ledger_member_account(p_from_membership_id, p_merchant_id,
                                                    p_member_id, 'redeemed');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    SELECT * INTO v_to FROM ledger_member_account(p_to_membership_id, p_merchant_id, NULL,
                                                  'redeemed');
    IF NOT FOUND OR v_to.program_id <> v_from.program_id THEN
        RAISE EXCEPTION 'no recipient with this membership in the program'
            USING ERRCODE = 'LR404';
    END IF;
    v_tx := ledger_claim('gift', p_scope, p_key, p_request_hash, p_client_id, v_from.member_id,
                         p_message, jsonb_build_object('to_membership_id', p_to_membership_id));
    IF v_tx IS NULL THEN
        RETURN QUERY SELECT x.transaction_id, x.entry_id, x.balance_after, g.recipient_entry_id,
                            x.created_at, true
                       FROM ledger_replay(p_scope, p_key, p_request_hash) x
                       JOIN gift g ON g.transaction_id = x.transaction_id;
        RETURN;
    END IF;
    IF p_from_membership_id = p_to_membership_id THEN
        RAISE EXCEPTION 'a member cannot give points to themself' USING ERRCODE = 'LA422';
    END IF;
    IF NOT (v_from.active AND v_to.active) THEN
        RAISE EXCEPTION 'program or membership is not active' USING ERRCODE = 'LA423';
    END IF;
    SELECT * INTO v_policy FROM gift_policy WHERE program_id = v_from.program_id;
    IF NOT FOUND OR NOT v_policy.enabled THEN
        RAISE EXCEPTION 'this program does not allow gifts of points' USING ERRCODE = 'LR004';
    END IF;
    IF p_points > v_policy.max_points_per_gift THEN
        RAISE EXCEPTION 'a gift is at most % points', v_policy.max_points_per_gift
            USING ERRCODE = 'LA422';
    END IF;
    -- Both accounts, in id order (two gifts in opposite directions never deadlock).
    PERFORM 1 FROM account WHERE id IN (v_from.account_id, v_to.account_id)
     ORDER BY id FOR UPDATE;
    SELECT coalesce(sum(g.points), 0) INTO v_sent FROM gift g
     WHERE g.from_membership_id = p_from_membership_id
       AND g.created_at >= reward_period_start('day', now(), p_time_zone);
    IF v_sent + p_points > v_policy.daily_limit_points THEN
        RAISE EXCEPTION 'gifts of at most % points a day; % given today',
            v_policy.daily_limit_points, v_sent USING ERRCODE = 'LR002';
    END IF;

    v_balance := ledger_debit(v_tx, v_from.account_id, p_points);
    SELECT min(l.expires_at), bool_and(l.expires_at IS NULL) INTO v_expires, v_never
      FROM lot_consumption c JOIN lot l ON l.id = c.lot_id WHERE c.transaction_id = v_tx;

    UPDATE account
       SET debt = account.debt - least(account.debt, p_points),
           balance = account.balance + p_points - least(account.debt, p_points)
     WHERE id = v_to.account_id
    RETURNING new.balance, old.debt - new.debt INTO v_to_balance, v_repaid;
    -- One statement (the balance trigger checks whole statements), in an order that
    -- keeps each account's posting ids in its running balance's order.
    WITH legs AS (
        INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount,
                             balance_after)
        SELECT v_tx, leg.account_id, v_from.program_id, leg.member_id, leg.amount,
               leg.balance_after
          FROM (VALUES (1, v_from.account_id, v_from.member_id, -p_points, v_balance),
                       (2, v_to.account_id, v_to.member_id, p_points, v_to_balance + v_repaid),
                       (3, v_to.account_id, v_to.member_id, -v_repaid, v_to_balance),
                       (4, (SELECT c.id FROM account c
                             WHERE c.program_id = v_from.program_id AND c.kind = 'clawback'
                               AND c.membership_id IS NULL), v_to.member_id, v_repaid, NULL))
               AS leg (n, account_id, member_id, amount, balance_after)
         WHERE leg.amount <> 0
         ORDER BY leg.n
        RETURNING id, account_id, amount
    )
    SELECT min(legs.id) FILTER (WHERE legs.account_id = v_from.account_id),
           min(legs.id) FILTER (WHERE legs.account_id = v_to.account_id AND legs.amount > 0)
      INTO v_entry, v_to_entry FROM legs;
    INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount, remaining,
                     available_at, expires_at)
    VALUES (v_to.account_id, v_from.program_id, v_to.member_id, v_tx, p_points,
            p_points - v_repaid, now(), CASE WHEN v_never THEN NULL ELSE v_expires END)
    RETURNING id INTO v_lot;
    IF v_repaid > 0 THEN
        INSERT INTO lot_consumption (transaction_id, lot_id, points) VALUES (v_tx, v_lot, v_repaid);
    END IF;
    INSERT INTO gift (program_id, from_membership_id, to_membership_id, points, message,
                      transaction_id, recipient_entry_id)
    VALUES (v_from.program_id, p_from_membership_id, p_to_membership_id, p_points, p_message,
            v_tx, v_to_entry);
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.gifted', v_from.merchant_id, v_from.member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', p_from_membership_id,
                               'to_membership_id', p_to_membership_id, 'points', p_points,
                               'balance_after', v_balance)),
           ('points.gift_received', v_from.merchant_id, v_to.member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', p_to_membership_id,
                               'from_membership_id', p_from_membership_id,
                               'points', p_points, 'balance_after', v_to_balance));
    RETURN QUERY SELECT v_tx, v_entry, v_balance, v_to_entry, now(), false;
END $$;
