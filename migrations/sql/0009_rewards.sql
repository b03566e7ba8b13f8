-- Rewards (migration 0009): redemptions on reward holds, stock, coupons, point gifts.
--
-- Lock order, everywhere: the member account row(s) first (in id order), then the reward's
-- stock slot(s) (in slot order). A redemption, its hold and its coupon change only under
-- the member account's lock, like lots and holds (0006), so per-member limits are counted
-- under it and a redemption never changes under a reader that holds it.
--
-- Stock contention: a popular reward's stock would be one hot row that every reservation
-- updates and holds until its commit (a WAL flush), so reservations of it would run one at
-- a time. The stock is striped over slots (reward_stock_slot); a reservation takes a unit
-- from the first slot with stock that no other transaction holds (FOR UPDATE SKIP LOCKED,
-- starting at a random slot), late in its transaction. Only when every slot with stock is
-- busy does it wait, for the first one in slot order that still has stock after the wait:
-- so a reward is out of stock exactly when every slot is empty, never because slots were
-- busy. Whoever locks several slots (a waiting reservation, a restock, the release job)
-- locks them in slot order. The
-- reward row itself is not written by reservations (and redemptions have no foreign key
-- to it, which would take a KEY SHARE lock on it each time).
--
-- SQLSTATEs (as in 0001; the domain maps them to error codes):
--   LR404 reward, redemption or coupon not found (or not the caller's)
--   LR001 out of stock
--   LR002 a member limit (per reward, or the daily gift limit) is reached
--   LR003 the member is not in the reward's audience (tier)
--   LR004 not available: the reward is archived or outside its window, gifting is off
--   LR005 the redemption or coupon is not in a state that allows this
--   LR409 every candidate coupon code was taken (the caller retries with new ones)

CREATE TRIGGER reward_version_append_only BEFORE UPDATE OR DELETE ON reward_version
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER gift_append_only BEFORE UPDATE OR DELETE ON gift
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- A reward hold is released or captured only together with its redemption (whose stock
-- must come back in the same transaction): the redemption functions say so for their
-- transaction; captureDiscount / voidDiscount on a reward hold are refused.
CREATE FUNCTION reward_hold_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('alliance.redemption', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'hold % belongs to a reward redemption: change the redemption', OLD.id
            USING ERRCODE = 'LA423';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER hold_reward_guard BEFORE UPDATE ON hold
    FOR EACH ROW WHEN (OLD.kind = 'reward' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION reward_hold_guard();

-- As 0006, but reward holds are left to reward_release_expired (with their stock).
CREATE OR REPLACE FUNCTION ledger_hold_release_expired(p_now timestamptz, p_limit integer)
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
                               AND h.kind <> 'reward'
                             ORDER BY h.expires_at, h.id LIMIT p_limit)
             ORDER BY a.id FOR UPDATE SKIP LOCKED) locked;
    IF v_accounts IS NULL THEN
        RETURN 0;
    END IF;
    WITH released AS (
        UPDATE hold SET status = 'expired', closed_at = now()
         WHERE account_id = ANY (v_accounts) AND status = 'authorized' AND expires_at <= p_now
           AND kind <> 'reward'
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

-- The start of the period (day, week from Monday, month, year) containing p_at, cut in
-- the alliance time zone.
CREATE FUNCTION reward_period_start(p_period text, p_at timestamptz, p_time_zone text)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT date_trunc(p_period, p_at AT TIME ZONE p_time_zone) AT TIME ZONE p_time_zone
$$;

-- Reserve a reward for a membership: hold its points (a 'reward' hold, 0006) and take a
-- unit of stock, in one transaction. Idempotent per (scope, key): a replay returns the
-- redemption as it is now; the key with another request is LA409.
CREATE FUNCTION reward_reserve(
    p_scope text, p_key text, p_request_hash bytea, p_merchant_id bigint, p_member_id bigint,
    p_membership_id bigint, p_reward_id bigint, p_time_zone text)
RETURNS TABLE (r redemption, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_red redemption;
    v_reward reward;
    v_version reward_version;
    v_hold hold;
    v_tier text;
    v_count bigint;
    v_start integer;
    v_slot integer;
BEGIN
    SELECT * INTO v FROM ledger_member_account(p_membership_id, p_merchant_id, p_member_id,
                                               'redeemed');
    IF NOT FOUND THEN
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

    SELECT * INTO v_reward FROM reward WHERE id = p_reward_id AND program_id = v.program_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reward not found in the membership''s program' USING ERRCODE = 'LR404';
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
        SELECT t.code INTO v_tier
          FROM tier t
         WHERE t.id = tier_held(tier_current_ladder(v.program_id),
                                (SELECT mt.tier_id FROM membership_tier mt
                                  WHERE mt.membership_id = p_membership_id));
        IF v_tier IS NULL OR NOT v_tier = ANY (v_version.tier_codes) THEN
            RAISE EXCEPTION 'reward % is for members of tiers %', p_reward_id,
                array_to_string(v_version.tier_codes, ', ') USING ERRCODE = 'LR003';
        END IF;
    END IF;
    -- Limits count standing redemptions of the reward (any version), under the account's
    -- lock: concurrent reservations of one member are counted one after another.
    IF v_version.limit_total IS NOT NULL THEN
        SELECT count(*) INTO v_count FROM redemption
         WHERE membership_id = p_membership_id AND reward_id = v_reward.id
           AND status IN ('reserved', 'fulfilled', 'completed');
        IF v_count >= v_version.limit_total THEN
            RAISE EXCEPTION 'at most % of reward % per member', v_version.limit_total,
                p_reward_id USING ERRCODE = 'LR002';
        END IF;
    END IF;
    IF v_version.limit_per_period IS NOT NULL THEN
        SELECT count(*) INTO v_count FROM redemption
         WHERE membership_id = p_membership_id AND reward_id = v_reward.id
           AND status IN ('reserved', 'fulfilled', 'completed')
           AND created_at >= reward_period_start(v_version.limit_period, now(), p_time_zone);
        IF v_count >= v_version.limit_per_period THEN
            RAISE EXCEPTION 'at most % of reward % per member per %',
                v_version.limit_per_period, p_reward_id, v_version.limit_period
                USING ERRCODE = 'LR002';
        END IF;
    END IF;

    -- The hold's own key lives in a scope of its own: no clash with discount holds.
    SELECT * INTO v_hold FROM ledger_hold_authorize(
        p_scope || '/reward', p_key, p_request_hash, p_merchant_id, p_member_id,
        p_membership_id, v_version.points_price, 'reward', v_version.reserve_minutes * 60,
        'reward ' || v_reward.code || ' v' || v_version.version);
    -- A unit of stock, as late as can be: a free slot, else wait for one (see the top).
    -- Slots in turn from a random one (16: STOCK_SLOTS, alliance/rewards/models.py), so
    -- concurrent reservations start apart; SKIP LOCKED never waits.
    v_start := floor(random() * 16)::integer;
    SELECT s.slot INTO v_slot FROM reward_stock_slot s
     WHERE s.reward_id = v_reward.id AND (s.stock IS NULL OR s.stock > 0)
     ORDER BY s.slot < v_start, s.slot
     LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        -- Every slot with stock is busy: wait, in slot order. A row that emptied while we
        -- waited fails the recheck but stays locked by us, so this must take slots in the
        -- order restocks and the release job take them (ascending), or two of us could
        -- each hold a slot the other waits for.
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
                            idempotency_scope, idempotency_key, request_hash)
    VALUES (v_reward.id, v_version.id, v.program_id, p_membership_id, v.member_id,
            v.account_id, v_hold.id, v_slot, v_version.points_price, v_version.cash_price,
            v_hold.expires_at, p_scope, p_key, p_request_hash)
    RETURNING * INTO v_red;
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('reward.reserved', v.merchant_id, v.member_id,
            jsonb_build_object('redemption_id', v_red.id, 'reward_id', v_reward.id,
                               'membership_id', p_membership_id, 'points', v_red.points,
                               'expires_at', v_red.expires_at));
    RETURN QUERY SELECT v_red, false;
END $$;

-- The redemption p_id of one of the merchant's programs (and the member's, when given),
-- with its member account locked; as it is under the lock.
CREATE FUNCTION reward_redemption_locked(p_id bigint, p_merchant_id bigint, p_member_id bigint)
RETURNS redemption
LANGUAGE plpgsql AS $$
DECLARE
    v_red redemption;
BEGIN
    SELECT r.* INTO v_red FROM redemption r JOIN program p ON p.id = r.program_id
     WHERE r.id = p_id AND (p_merchant_id IS NULL OR p.merchant_id = p_merchant_id)
       AND (p_member_id IS NULL OR r.member_id = p_member_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'redemption not found' USING ERRCODE = 'LR404';
    END IF;
    PERFORM 1 FROM account WHERE id = v_red.account_id FOR UPDATE;
    SELECT * INTO v_red FROM redemption WHERE id = p_id;
    RETURN v_red;
END $$;

-- Fulfil a reserved redemption: a coupon (the first of p_codes not taken) or a shipment.
-- Its points stay held until completion, for the reward's complete_days. Fulfilling a
-- fulfilled redemption the same way returns it; any other state is LR005.
CREATE FUNCTION reward_fulfil(
    p_id bigint, p_merchant_id bigint, p_codes text[], p_carrier text, p_tracking text)
RETURNS SETOF redemption
LANGUAGE plpgsql AS $$
DECLARE
    v_red redemption;
    v_days integer;
    v_method text := CASE WHEN p_carrier IS NULL THEN 'coupon' ELSE 'shipment' END;
    v_code text;
    v_coupon bigint;
BEGIN
    v_red := reward_redemption_locked(p_id, p_merchant_id, NULL);
    IF v_red.status = 'fulfilled' AND v_red.fulfilment = v_method
       AND (v_method = 'coupon' OR (v_red.carrier, v_red.tracking_number)
                                   IS NOT DISTINCT FROM (p_carrier, p_tracking)) THEN
        RETURN NEXT v_red;
        RETURN;
    END IF;
    IF v_red.status <> 'reserved' THEN
        RAISE EXCEPTION 'redemption % is %', p_id, v_red.status USING ERRCODE = 'LR005';
    END IF;
    IF v_red.expires_at <= now() THEN
        RAISE EXCEPTION 'redemption % expired at %', p_id, v_red.expires_at
            USING ERRCODE = 'LR005';
    END IF;
    SELECT complete_days INTO v_days FROM reward_version WHERE id = v_red.reward_version_id;
    UPDATE redemption
       SET status = 'fulfilled', fulfilment = v_method, carrier = p_carrier,
           tracking_number = p_tracking, fulfilled_at = now(),
           expires_at = now() + make_interval(days => v_days)
     WHERE id = p_id
    RETURNING * INTO v_red;
    UPDATE hold SET expires_at = v_red.expires_at WHERE id = v_red.hold_id;
    IF v_method = 'coupon' THEN
        FOREACH v_code IN ARRAY p_codes LOOP
            INSERT INTO coupon (redemption_id, program_id, code, valid_until)
            VALUES (p_id, v_red.program_id, v_code, v_red.expires_at)
            ON CONFLICT (code) DO NOTHING
            RETURNING id INTO v_coupon;
            EXIT WHEN v_coupon IS NOT NULL;
        END LOOP;
        IF v_coupon IS NULL THEN
            RAISE EXCEPTION 'every candidate coupon code is taken' USING ERRCODE = 'LR409';
        END IF;
    END IF;
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('reward.fulfilled', p_merchant_id, v_red.member_id,
            jsonb_build_object('redemption_id', p_id, 'fulfilment', v_method,
                               'complete_by', v_red.expires_at));
    RETURN NEXT v_red;
END $$;

-- Capture a fulfilled redemption's held points (under its account's lock, taken).
CREATE FUNCTION reward_capture(v_red redemption, p_merchant_id bigint, p_client_id text)
RETURNS redemption
LANGUAGE plpgsql AS $$
DECLARE
    v_capture record;
BEGIN
    PERFORM set_config('alliance.redemption', 'on', true);
    SELECT * INTO v_capture
      FROM ledger_hold_capture(v_red.hold_id, NULL, NULL, NULL, p_client_id);
    PERFORM set_config('alliance.redemption', 'off', true);
    UPDATE redemption SET status = 'completed', transaction_id = v_capture.transaction_id,
                          closed_at = now()
     WHERE id = v_red.id
    RETURNING * INTO v_red;
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('reward.completed', p_merchant_id, v_red.member_id,
            jsonb_build_object('redemption_id', v_red.id, 'points', v_red.points,
                               'transaction_id', v_red.transaction_id));
    RETURN v_red;
END $$;

-- Complete a fulfilled redemption: its held points are spent. Completing a completed
-- redemption returns it; any other state is LR005.
CREATE FUNCTION reward_complete(p_id bigint, p_merchant_id bigint, p_client_id text)
RETURNS SETOF redemption
LANGUAGE plpgsql AS $$
DECLARE
    v_red redemption;
BEGIN
    v_red := reward_redemption_locked(p_id, p_merchant_id, NULL);
    IF v_red.status = 'completed' THEN
        RETURN NEXT v_red;
        RETURN;
    END IF;
    IF v_red.status <> 'fulfilled' THEN
        RAISE EXCEPTION 'redemption % is %: only a fulfilled redemption is completed', p_id,
            v_red.status USING ERRCODE = 'LR005';
    END IF;
    IF v_red.expires_at <= now() THEN
        RAISE EXCEPTION 'redemption % lapsed at %', p_id, v_red.expires_at
            USING ERRCODE = 'LR005';
    END IF;
    RETURN NEXT reward_capture(v_red, p_merchant_id, p_client_id);
END $$;

-- Give redemptions' stock units back to the slot they came from (after the account lock).
CREATE FUNCTION reward_restock(p_reward_id bigint, p_slot integer, p_units bigint)
RETURNS void
LANGUAGE sql AS $$
    UPDATE reward_stock_slot s SET stock = s.stock + p_units, redeemed = s.redeemed - p_units
     WHERE s.reward_id = p_reward_id AND s.slot = p_slot
$$;

-- Cancel a reserved or fulfilled redemption (a fulfilled one: the merchant, while its
-- coupon is unused): points released, coupon void, stock back. Cancelling a cancelled
-- redemption returns it; completed and expired ones are LR005.
CREATE FUNCTION reward_cancel(p_id bigint, p_merchant_id bigint, p_member_id bigint)
RETURNS SETOF redemption
LANGUAGE plpgsql AS $$
DECLARE
    v_red redemption;
BEGIN
    v_red := reward_redemption_locked(p_id, p_merchant_id, p_member_id);
    IF v_red.status = 'cancelled' THEN
        RETURN NEXT v_red;
        RETURN;
    END IF;
    IF v_red.status NOT IN ('reserved', 'fulfilled') THEN
        RAISE EXCEPTION 'redemption % is %', p_id, v_red.status USING ERRCODE = 'LR005';
    END IF;
    IF v_red.status = 'fulfilled' AND p_member_id IS NOT NULL THEN
        RAISE EXCEPTION 'redemption % is fulfilled: the merchant cancels it', p_id
            USING ERRCODE = 'LR005';
    END IF;
    PERFORM 1 FROM coupon WHERE redemption_id = p_id AND status = 'used';
    IF FOUND THEN
        RAISE EXCEPTION 'the coupon of redemption % was used', p_id USING ERRCODE = 'LR005';
    END IF;
    PERFORM set_config('alliance.redemption', 'on', true);
    PERFORM ledger_hold_void(v_red.hold_id, NULL, NULL);
    PERFORM set_config('alliance.redemption', 'off', true);
    UPDATE coupon SET status = 'void' WHERE redemption_id = p_id AND status = 'issued';
    UPDATE redemption SET status = 'cancelled', closed_at = now() WHERE id = p_id
    RETURNING * INTO v_red;
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    SELECT 'reward.cancelled', p.merchant_id, v_red.member_id,
           jsonb_build_object('redemption_id', p_id, 'points', v_red.points)
      FROM program p WHERE p.id = v_red.program_id;
    PERFORM reward_restock(v_red.reward_id, v_red.stock_slot, 1);
    RETURN NEXT v_red;
END $$;

-- Release up to p_limit redemptions past their deadline (reserved and not fulfilled in
-- time, or fulfilled and not completed in time): hold released, coupon void, stock back.
-- Accounts locked in id order with SKIP LOCKED, as the holds job does; the state is
-- checked again under the lock, so concurrent runs release each redemption once.
CREATE FUNCTION reward_release_expired(p_now timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_accounts bigint[];
    v_rewards bigint[];
    v_slots integer[];
    v_released integer;
    s record;
BEGIN
    SELECT array_agg(locked.id) INTO v_accounts
      FROM (SELECT a.id FROM account a
             WHERE a.id IN (SELECT r.account_id FROM redemption r
                             WHERE r.status IN ('reserved', 'fulfilled') AND r.expires_at <= p_now
                             ORDER BY r.expires_at, r.id LIMIT p_limit)
             ORDER BY a.id FOR UPDATE SKIP LOCKED) locked;
    IF v_accounts IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM set_config('alliance.redemption', 'on', true);
    WITH released AS (
        UPDATE redemption SET status = 'expired', closed_at = now()
         WHERE account_id = ANY (v_accounts) AND status IN ('reserved', 'fulfilled')
           AND expires_at <= p_now
        RETURNING id, hold_id, reward_id, stock_slot, program_id, member_id, points
    ), holds AS (
        UPDATE hold SET status = 'expired', closed_at = now()
          FROM released
         WHERE hold.id = released.hold_id AND hold.status = 'authorized'
        RETURNING hold.account_id, hold.points
    ), freed AS (
        UPDATE account SET held = account.held - totals.points
          FROM (SELECT account_id, sum(points) AS points FROM holds GROUP BY account_id) totals
         WHERE account.id = totals.account_id
    ), coupons AS (
        UPDATE coupon SET status = 'void'
          FROM released
         WHERE coupon.redemption_id = released.id AND coupon.status = 'issued'
    ), events AS (
        INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
        SELECT 'reward.expired', p.merchant_id, released.member_id,
               jsonb_build_object('redemption_id', released.id, 'points', released.points)
          FROM released JOIN program p ON p.id = released.program_id
    )
    SELECT count(*)::integer, array_agg(reward_id), array_agg(stock_slot)
      INTO v_released, v_rewards, v_slots FROM released;
    PERFORM set_config('alliance.redemption', 'off', true);
    -- Stock slots after the account locks, one at a time in (reward, slot) order: two runs
    -- that give back units of the same rewards never deadlock.
    FOR s IN SELECT u.reward_id, u.slot, count(*) AS units
               FROM unnest(v_rewards, v_slots) AS u (reward_id, slot)
              GROUP BY u.reward_id, u.slot ORDER BY u.reward_id, u.slot LOOP
        PERFORM reward_restock(s.reward_id, s.slot, s.units);
    END LOOP;
    RETURN v_released;
END $$;

-- Use a coupon at the counter of the program's merchant: once. Its redemption, when
-- fulfilled, is completed (the held points are spent) in the same transaction.
CREATE FUNCTION reward_redeem_coupon(
    p_code text, p_merchant_id bigint, p_store text, p_client_id text)
RETURNS TABLE (coupon_id bigint, redemption_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_coupon coupon;
    v_red redemption;
BEGIN
    SELECT c.* INTO v_coupon FROM coupon c JOIN program p ON p.id = c.program_id
     WHERE c.code = p_code AND p.merchant_id = p_merchant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no coupon with this code' USING ERRCODE = 'LR404';
    END IF;
    v_red := reward_redemption_locked(v_coupon.redemption_id, p_merchant_id, NULL);
    SELECT * INTO v_coupon FROM coupon WHERE id = v_coupon.id;  -- as it is under the lock
    IF v_coupon.status = 'used' THEN
        RAISE EXCEPTION 'coupon already used at % (store %)', v_coupon.used_at,
            coalesce(v_coupon.used_store, '-') USING ERRCODE = 'LR005';
    END IF;
    IF v_coupon.status = 'void' THEN
        RAISE EXCEPTION 'coupon is void (its redemption is %)', v_red.status
            USING ERRCODE = 'LR005';
    END IF;
    IF v_coupon.valid_until <= now() THEN
        RAISE EXCEPTION 'coupon expired at %', v_coupon.valid_until USING ERRCODE = 'LR005';
    END IF;
    UPDATE coupon SET status = 'used', used_at = now(), used_merchant_id = p_merchant_id,
                      used_store = p_store
     WHERE id = v_coupon.id;
    IF v_red.status = 'fulfilled' THEN
        PERFORM reward_capture(v_red, p_merchant_id, p_client_id);
    END IF;
    RETURN QUERY SELECT v_coupon.id, v_red.id;
END $$;

-- Give p_points from one membership to another of the same program, as the program's
-- gift policy allows: one balanced transaction (-points on the sender, +points on the
-- recipient), the sender's lots consumed soonest-expiring first, a new lot for the
-- recipient that expires no later than the soonest lot it came from (a gift never
-- extends validity); the recipient's clawback debt is repaid first, as by every credit.
-- Idempotent per (scope, key).
CREATE FUNCTION points_gift(
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
    v_held bigint;
    v_spendable bigint;
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

    UPDATE account SET balance = account.balance - p_points
     WHERE id = v_from.account_id AND account.balance - account.held >= p_points
    RETURNING account.balance, account.held INTO v_balance, v_held;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient points' USING ERRCODE = 'LA402';
    END IF;
    SELECT coalesce(sum(l.remaining), 0) INTO v_spendable
      FROM lot l
     WHERE l.account_id = v_from.account_id AND l.remaining > 0
       AND l.available_at <= now() AND (l.expires_at IS NULL OR l.expires_at > now());
    IF v_spendable - v_held < p_points THEN
        RAISE EXCEPTION 'insufficient points' USING ERRCODE = 'LA402';
    END IF;
    IF ledger_consume_lots(v_tx, v_from.account_id, p_points) <> p_points THEN
        RAISE EXCEPTION 'lots do not cover % points', p_points USING ERRCODE = 'LA500';
    END IF;
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
