-- Folds followed by refunds (migration 0013).
--
-- A merge folds an absorbed member's account into the survivor's of the same program:
-- balance, open lots and debt move, the absorbed account is emptied and its membership
-- closed (alliance/identity/merge.py). A refund that came later still went to the
-- account the purchase earned on, or the discount was paid from: a purchase refund found
-- it empty (and put the debt on a closed membership), a discount refund gave points to a
-- closed membership. Now the folded account names its target (`account.folded_into_id`)
-- and each lot a fold re-creates names the transaction its points came from
-- (`lot.origin_transaction_id`): ledger_reverse claws back from the account the points
-- are in now, the purchase's own lots first, and ledger_hold_refund gives back to it.
-- Each follows the chain of folds under each account's lock in turn: a fold that
-- committed before is followed; one that starts later waits for the refund.

-- As 0005, on the account the order's points are in now.
CREATE OR REPLACE FUNCTION ledger_reverse(
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
    v_account_id bigint;
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

    -- The account the order's points are in now: the earn's, or the one a merge folded it
    -- into (and so on). Its lock serialises this order's refunds with every movement of
    -- its lots; a fold after the lock waits for it, a fold before it is followed.
    v_account_id := v_earn.account_id;
    LOOP
        SELECT a.id, a.balance, a.held, a.debt, a.member_id, a.membership_id, a.folded_into_id
          INTO v_account FROM account a WHERE a.id = v_account_id FOR UPDATE;
        EXIT WHEN v_account.folded_into_id IS NULL;
        v_account_id := v_account.folded_into_id;
    END LOOP;

    SELECT * INTO v_refund FROM purchase_refund r
     WHERE r.merchant_id = p_merchant_id AND r.refund_id = p_refund_id;
    IF FOUND THEN
        IF v_refund.request_hash IS DISTINCT FROM p_request_hash THEN
            RAISE EXCEPTION 'refund id % was already used for a different refund', p_refund_id
                USING ERRCODE = 'LA409';
        END IF;
        RETURN QUERY
        SELECT v_refund.id, v_refund.transaction_id, p.id, v_account.membership_id,
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
                             p_request_hash, p_client_id, v_account.member_id, p_reason,
                             jsonb_build_object('order_id', p_order_id, 'refund_id', p_refund_id,
                                                'refund_amount', p_amount));
        IF v_tx IS NULL THEN
            RAISE EXCEPTION 'concurrent refund with the same id; retry' USING ERRCODE = '40001';
        END IF;

        -- What can be taken: the order's lots, then (debt policy) the other spendable
        -- lots soonest-expiring first, never below what is held.
        v_taken := least(v_clawback, v_account.balance - v_account.held);
        WITH candidates AS (
            SELECT l.id, l.remaining,
                   coalesce(l.origin_transaction_id, l.transaction_id) = v_earn.id AS own,
                   l.expires_at
              FROM lot l
             WHERE l.account_id = v_account.id AND l.remaining > 0
               AND (coalesce(l.origin_transaction_id, l.transaction_id) = v_earn.id
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
         WHERE id = v_account.id;

        WITH legs AS (
            INSERT INTO posting
                (transaction_id, account_id, program_id, member_id, amount, balance_after)
            SELECT v_tx, leg.account_id, v_earn.program_id, v_account.member_id, leg.amount,
                   leg.balance_after
              FROM (VALUES (0, v_account.id, -v_taken, v_account.balance - v_taken),
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
        SELECT min(legs.id) INTO v_entry FROM legs WHERE legs.account_id = v_account.id;

        INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
        VALUES ('points.reversed', p_merchant_id, v_account.member_id,
                jsonb_build_object('transaction_id', v_tx, 'membership_id', v_account.membership_id,
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

    RETURN QUERY SELECT v_refund.id, v_tx, v_entry, v_account.membership_id, v_earn.program_id,
                        v_account.balance - v_taken, v_account.debt + v_debt, p_amount,
                        v_clawback, v_taken, v_debt, v_written_off, v_refund.created_at, false;
END $$;

-- As 0006, given back to the account the hold's points are in now; earlier refunds of
-- the hold counted on whichever account they went to.
CREATE OR REPLACE FUNCTION ledger_hold_refund(
    p_hold_id bigint, p_merchant_id bigint, p_refund_id text, p_request_hash bytea,
    p_points bigint, p_client_id text, p_time_zone text)
RETURNS TABLE (transaction_id bigint, entry_id bigint, balance_after bigint, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_hold hold;
    v_account record;
    v_account_id bigint;
    v_program record;
    v_refunded bigint;
    v_tx bigint;
    c record;
BEGIN
    v_hold := ledger_hold_locked(p_hold_id, p_merchant_id, NULL);
    -- The points go back to the account the hold's are in now: its own, or the one a
    -- merge folded it into (and so on), under that account's lock.
    v_account_id := v_hold.account_id;
    LOOP
        SELECT a.id, a.member_id, a.membership_id, a.folded_into_id INTO v_account
          FROM account a WHERE a.id = v_account_id FOR UPDATE;
        EXIT WHEN v_account.folded_into_id IS NULL;
        v_account_id := v_account.folded_into_id;
    END LOOP;
    -- As ledger_claim, with the spend it gives back (set at insert: transactions are facts).
    INSERT INTO ledger_transaction
        (kind, member_id, client_id, idempotency_scope, idempotency_key, request_hash, reason,
         details, reverses_id)
    VALUES ('refund', v_account.member_id, p_client_id, 'hold-refund:' || p_merchant_id,
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
      JOIN posting p ON p.transaction_id = t.id AND p.balance_after IS NOT NULL
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
        v_tx, v_account.id, v_program.redeemed_id, v_hold.program_id, v_account.member_id,
        p_points, now(), lot_expiry(v_program.expiry_policy, v_program.expiry_value, now(),
                                    p_time_zone));
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.refunded', v_program.merchant_id, v_account.member_id,
            jsonb_build_object('transaction_id', v_tx, 'hold_id', p_hold_id,
                               'membership_id', v_account.membership_id, 'points', p_points,
                               'balance_after', c.balance_after));
    RETURN QUERY SELECT v_tx, c.entry_id, c.balance_after, false;
END $$;
