-- Partner rewards (migration 0011): a member pays for merchant B's catalog reward with
-- the points of program A, when B accepts A's points (partner_acceptance, 0007). The
-- reservation holds the A points on the A account (a 'reward' hold, as for B's own
-- points); at completion they are spent by a 'partner_redemption' transaction and A's
-- merchant owes B's merchant their value (points × A's point value), as for a counter
-- redemption (ledger_partner_redeem, 0007). Cancelled or expired, nothing is owed.
--
-- Price: the reward's points price is in B points; in A points it is
-- ceil(price × B's point value / A's point value), so the value the member gives, and
-- A owes, is never less than the value B asks.
--
-- Who: the member, in the app of either merchant (the token's merchant is A's or B's);
-- a merchant reserves only with its own memberships, so B never handles A memberships
-- and A never spends its members' points at B without them.
--
-- SQLSTATEs as in 0009, and LA403 (a partner payment by a merchant), LA463 (B does not
-- accept A's points), LA422 (the price is outside B's accepted range for A points).

-- The points of a program worth a reward's price in another program's points: never
-- less value than the price.
CREATE FUNCTION reward_partner_price(p_points_price bigint, p_reward_point_value numeric,
                                     p_paid_point_value numeric)
RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT ceil(p_points_price * p_reward_point_value / p_paid_point_value)::bigint
$$;

-- As 0006, with the capture's transaction kind and details given (a partner reward's
-- capture is a 'partner_redemption' naming the merchant it is spent at).
DROP FUNCTION ledger_hold_capture(bigint, bigint, bigint, bigint, text);
CREATE FUNCTION ledger_hold_capture(
    p_hold_id bigint, p_merchant_id bigint, p_member_id bigint, p_points bigint,
    p_client_id text, p_kind text DEFAULT 'spend', p_details jsonb DEFAULT '{}')
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

    v_tx := ledger_claim(p_kind, 'hold', v_hold.id::text, NULL, p_client_id, v_hold.member_id,
                         v_hold.reason, jsonb_build_object('hold_id', v_hold.id) || p_details);
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
                               'hold_id', v_hold.id, 'balance_after', v_balance)
            || p_details);
    RETURN QUERY SELECT v_hold.id, v_tx, v_entry, v_balance, false;
END $$;

-- As 0009, and a member may pay with the points of another merchant's program that the
-- reward's merchant accepts (see the top). Limits count the member's standing
-- redemptions of the reward from all their memberships, however each was paid.
CREATE OR REPLACE FUNCTION reward_reserve(
    p_scope text, p_key text, p_request_hash bytea, p_merchant_id bigint, p_member_id bigint,
    p_membership_id bigint, p_reward_id bigint, p_time_zone text)
RETURNS TABLE (r redemption, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_red redemption;
    v_reward reward;
    v_owner bigint;          -- the reward's merchant
    v_partner boolean;       -- paid with another merchant's points
    v_acceptance partner_acceptance;
    v_version reward_version;
    v_hold hold;
    v_points bigint;
    v_audience bigint;       -- the membership whose tier the audience is checked against
    v_tier text;
    v_count bigint;
    v_in_period bigint;
    v_person bigint;         -- the membership's member, whose limits count
    v_start integer;
    v_slot integer;
BEGIN
    -- A member pays from any membership of theirs; a merchant from its own.
    SELECT * INTO v FROM ledger_member_account(
        p_membership_id, CASE WHEN p_member_id IS NULL THEN p_merchant_id END, p_member_id,
        'redeemed');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    SELECT w.* INTO v_reward FROM reward w WHERE w.id = p_reward_id;
    SELECT p.merchant_id INTO v_owner FROM program p WHERE p.id = v_reward.program_id;
    -- A member's token is its app's: that of the paying merchant or of the reward's.
    IF p_member_id IS NOT NULL AND p_merchant_id IS NOT NULL AND p_merchant_id <> v.merchant_id
       AND p_merchant_id IS DISTINCT FROM v_owner THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    PERFORM 1 FROM account WHERE id = v.account_id FOR UPDATE;
    SELECT * INTO v_red FROM redemption
     WHERE idempotency_scope = p_scope AND idempotency_key = p_key;
    IF FOUND THEN
        IF v_red.request_hash IS DISTINCT FROM p_request_hash THEN
            RAISE EXCEPTION 'idempotency key % was already used for a different request', p_key
                USING ERRCODE = 'LA409';
        END IF;
        RETURN QUERY SELECT v_red, true;
        RETURN;
    END IF;

    IF v_reward.id IS NULL
       OR (v_reward.program_id <> v.program_id AND v_owner = v.merchant_id) THEN
        RAISE EXCEPTION 'reward not found in the membership''s program' USING ERRCODE = 'LR404';
    END IF;
    v_partner := v_reward.program_id <> v.program_id;
    IF v_partner THEN
        IF p_member_id IS NULL THEN
            RAISE EXCEPTION 'only the member pays for a partner''s reward with these points'
                USING ERRCODE = 'LA403';
        END IF;
        SELECT a.* INTO v_acceptance FROM partner_acceptance a
          JOIN merchant m ON m.id = a.merchant_id AND m.status = 'active'
         WHERE a.merchant_id = v_owner AND a.program_id = v.program_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the reward''s merchant does not accept these points'
                USING ERRCODE = 'LA463';
        END IF;
    END IF;
    IF v_reward.status <> 'active' THEN
        RAISE EXCEPTION 'reward % is archived', p_reward_id USING ERRCODE = 'LR004';
    END IF;
    PERFORM 1 FROM reward_stock_slot s  -- unlocked read: sold out fails fast, without a hold
     WHERE s.reward_id = v_reward.id AND (s.stock IS NULL OR s.stock > 0);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reward % is out of stock', p_reward_id USING ERRCODE = 'LR001';
    END IF;
    SELECT * INTO v_version FROM reward_version
     WHERE reward_id = v_reward.id AND version = v_reward.version;
    IF now() < v_version.valid_from OR now() >= v_version.valid_until THEN
        RAISE EXCEPTION 'reward % is not available now', p_reward_id USING ERRCODE = 'LR004';
    END IF;
    IF cardinality(v_version.tier_codes) > 0 THEN
        -- Tiers are the reward's program's: a partner payer holds them by a membership
        -- there.
        v_audience := CASE WHEN v_partner
                           THEN (SELECT m.id FROM membership m
                                  WHERE m.program_id = v_reward.program_id
                                    AND m.member_id = p_member_id AND m.status = 'active')
                           ELSE p_membership_id END;
        SELECT t.code INTO v_tier
          FROM tier t
         WHERE t.id = tier_held(tier_current_ladder(v_reward.program_id),
                                (SELECT mt.tier_id FROM membership_tier mt
                                  WHERE mt.membership_id = v_audience));
        IF v_tier IS NULL OR NOT v_tier = ANY (v_version.tier_codes) THEN
            RAISE EXCEPTION 'reward % is for members of tiers %', p_reward_id,
                array_to_string(v_version.tier_codes, ', ') USING ERRCODE = 'LR003';
        END IF;
    END IF;
    -- Limits count standing redemptions of the reward (any version) by the membership's
    -- member, from any of their memberships. The paying account's lock serialises one
    -- account's reservations; a lock on (member, reward) serialises the member's
    -- reservations of the reward from different accounts (taken after the account lock,
    -- and nothing waited for under it takes another account's lock: no deadlock).
    IF v_version.limit_total IS NOT NULL OR v_version.limit_per_period IS NOT NULL THEN
        SELECT m.member_id INTO v_person FROM membership m WHERE m.id = p_membership_id;
        PERFORM pg_advisory_xact_lock(
            hashtextextended('reward-limit:' || v_person || ':' || v_reward.id, 0));
        SELECT count(*),
               count(*) FILTER (WHERE d.created_at >= reward_period_start(
                                   coalesce(v_version.limit_period, 'day'), now(), p_time_zone))
          INTO v_count, v_in_period
          FROM redemption d
         WHERE d.reward_id = v_reward.id AND d.status IN ('reserved', 'fulfilled', 'completed')
           AND d.membership_id IN (SELECT o.id FROM membership o WHERE o.member_id = v_person);
        IF v_count >= v_version.limit_total THEN
            RAISE EXCEPTION 'at most % of reward % per member', v_version.limit_total,
                p_reward_id USING ERRCODE = 'LR002';
        END IF;
        IF v_in_period >= v_version.limit_per_period THEN
            RAISE EXCEPTION 'at most % of reward % per member per %',
                v_version.limit_per_period, p_reward_id, v_version.limit_period
                USING ERRCODE = 'LR002';
        END IF;
    END IF;

    v_points := v_version.points_price;
    IF v_partner THEN
        SELECT reward_partner_price(v_version.points_price, rp.point_value, pp.point_value)
          INTO v_points
          FROM program rp, program pp
         WHERE rp.id = v_reward.program_id AND pp.id = v.program_id;
        IF v_points < v_acceptance.min_points
           OR v_points > coalesce(v_acceptance.max_points, v_points) THEN
            RAISE EXCEPTION 'the reward costs % of these points; its merchant takes % to % of them',
                v_points, v_acceptance.min_points,
                coalesce(v_acceptance.max_points::text, 'any') USING ERRCODE = 'LA422';
        END IF;
    END IF;
    -- The hold's own key lives in a scope of its own: no clash with discount holds. The
    -- membership was checked above (for a member, in either merchant's app).
    SELECT * INTO v_hold FROM ledger_hold_authorize(
        p_scope || '/reward', p_key, p_request_hash,
        CASE WHEN p_member_id IS NULL THEN p_merchant_id END, p_member_id, p_membership_id,
        v_points, 'reward', v_version.reserve_minutes * 60,
        'reward ' || v_reward.code || ' v' || v_version.version);
    -- A unit of stock, as late as can be (see 0009): a free slot, else wait for one.
    v_start := floor(random() * 16)::integer;
    SELECT s.slot INTO v_slot FROM reward_stock_slot s
     WHERE s.reward_id = v_reward.id AND (s.stock IS NULL OR s.stock > 0)
     ORDER BY s.slot < v_start, s.slot
     LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        SELECT s.slot INTO v_slot FROM reward_stock_slot s
         WHERE s.reward_id = v_reward.id AND (s.stock IS NULL OR s.stock > 0)
         ORDER BY s.slot LIMIT 1 FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'reward % is out of stock', p_reward_id USING ERRCODE = 'LR001';
        END IF;
    END IF;
    UPDATE reward_stock_slot s SET stock = s.stock - 1, redeemed = s.redeemed + 1
     WHERE s.reward_id = v_reward.id AND s.slot = v_slot;
    INSERT INTO redemption (reward_id, reward_version_id, program_id, membership_id, member_id,
                            account_id, hold_id, stock_slot, points, cash_price, expires_at,
                            idempotency_scope, idempotency_key, request_hash, paid_program_id)
    VALUES (v_reward.id, v_version.id, v_reward.program_id, p_membership_id, v.member_id,
            v.account_id, v_hold.id, v_slot, v_points, v_version.cash_price,
            v_hold.expires_at, p_scope, p_key, p_request_hash, v.program_id)
    RETURNING * INTO v_red;
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('reward.reserved', v_owner, v.member_id,
            jsonb_build_object('redemption_id', v_red.id, 'reward_id', v_reward.id,
                               'membership_id', p_membership_id, 'points', v_red.points,
                               'paid_program_id', v.program_id,
                               'expires_at', v_red.expires_at));
    RETURN QUERY SELECT v_red, false;
END $$;

-- As 0009; a member may also act on a redemption paid from their membership at another
-- merchant in that merchant's app (cancel it, while reserved).
CREATE OR REPLACE FUNCTION reward_redemption_locked(
    p_id bigint, p_merchant_id bigint, p_member_id bigint)
RETURNS redemption
LANGUAGE plpgsql AS $$
DECLARE
    v_red redemption;
BEGIN
    SELECT r.* INTO v_red FROM redemption r
      JOIN program p ON p.id = r.program_id
      JOIN program pp ON pp.id = r.paid_program_id
     WHERE r.id = p_id
       AND (p_merchant_id IS NULL OR p.merchant_id = p_merchant_id
            OR (p_member_id IS NOT NULL AND pp.merchant_id = p_merchant_id))
       AND (p_member_id IS NULL OR r.member_id = p_member_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'redemption not found' USING ERRCODE = 'LR404';
    END IF;
    PERFORM 1 FROM account WHERE id = v_red.account_id FOR UPDATE;
    SELECT * INTO v_red FROM redemption WHERE id = p_id;
    RETURN v_red;
END $$;

-- As 0009; a partner-paid redemption's points are spent as a 'partner_redemption' and its
-- paying program's merchant owes the reward's merchant their value, in this transaction.
CREATE OR REPLACE FUNCTION reward_capture(v_red redemption, p_merchant_id bigint,
                                          p_client_id text)
RETURNS redemption
LANGUAGE plpgsql AS $$
DECLARE
    v_capture record;
    v_owner bigint;
    v_payer program;
BEGIN
    SELECT p.merchant_id INTO v_owner FROM program p WHERE p.id = v_red.program_id;
    PERFORM set_config('alliance.redemption', 'on', true);
    IF v_red.paid_program_id = v_red.program_id THEN
        SELECT * INTO v_capture
          FROM ledger_hold_capture(v_red.hold_id, NULL, NULL, NULL, p_client_id);
    ELSE
        SELECT * INTO v_capture
          FROM ledger_hold_capture(v_red.hold_id, NULL, NULL, NULL, p_client_id,
                                   'partner_redemption',
                                   jsonb_build_object('partner_merchant_id', v_owner,
                                                      'redemption_id', v_red.id));
        SELECT * INTO v_payer FROM program WHERE id = v_red.paid_program_id;
        INSERT INTO settlement_obligation (transaction_id, kind, debtor_merchant_id,
                                           creditor_merchant_id, program_id, member_id,
                                           points, point_value, amount, occurred_at)
        VALUES (v_capture.transaction_id, 'partner_redemption', v_payer.merchant_id, v_owner,
                v_payer.id, v_red.member_id, v_red.points, v_payer.point_value,
                v_red.points * v_payer.point_value, now());
    END IF;
    PERFORM set_config('alliance.redemption', 'off', true);
    UPDATE redemption SET status = 'completed', transaction_id = v_capture.transaction_id,
                          closed_at = now()
     WHERE id = v_red.id
    RETURNING * INTO v_red;
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('reward.completed', v_owner, v_red.member_id,
            jsonb_build_object('redemption_id', v_red.id, 'points', v_red.points,
                               'transaction_id', v_red.transaction_id));
    RETURN v_red;
END $$;
