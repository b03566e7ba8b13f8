-- Exchange between programs and cross-brand redemption (migration 0007): each is one
-- function call, one transaction, which also writes the settlement obligations.
--
-- SQLSTATEs, besides those of 0001/0005:
--   LA460 no exchange rate in force for the pair
--   LA461 the pair is closed by one of its merchants (opt-out)
--   LA462 the quote has expired or was already used
--   LA463 the partner merchant does not accept the program's points

CREATE TRIGGER exchange_rate_append_only BEFORE UPDATE OR DELETE ON exchange_rate
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER exchange_append_only BEFORE UPDATE OR DELETE ON exchange
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER settlement_obligation_append_only BEFORE UPDATE OR DELETE ON settlement_obligation
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER settlement_line_append_only BEFORE UPDATE OR DELETE ON settlement_line
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- A membership of one member, with its account and program: what an exchange or a
-- partner redemption needs of each side. Nothing when it is not the member's. The
-- account's own member (its ledger member, which a merge of two members may leave
-- different from the membership's) is the one its postings and lots carry.
CREATE FUNCTION exchange_side(p_membership_id bigint, p_member_id bigint)
RETURNS TABLE (membership_id bigint, account_id bigint, ledger_member_id bigint,
               program_id bigint, merchant_id bigint, point_value numeric, active boolean,
               expiry_policy text, expiry_value integer)
LANGUAGE sql STABLE AS $$
    SELECT m.id, a.id, a.member_id, p.id, p.merchant_id, p.point_value,
           p.status = 'active' AND m.status = 'active' AND x.status = 'active',
           p.expiry_policy, p.expiry_value
      FROM membership m
      JOIN program p ON p.id = m.program_id
      JOIN merchant x ON x.id = p.merchant_id
      JOIN account a ON a.membership_id = m.id
     WHERE m.id = p_membership_id AND m.member_id = p_member_id
$$;

-- What exchanging p_points from one program to another gives at p_at: the rate in force
-- (the pair's highest version whose window contains p_at, unless it is a withdrawal),
-- the fee (percentage rounded up, plus fixed points, in source points) and the points
-- out (floored for the member; the fraction left is the remainder).
CREATE FUNCTION exchange_terms(p_from_program bigint, p_to_program bigint, p_points bigint,
                               p_at timestamptz, OUT rate_id bigint, OUT fee bigint,
                               OUT points_out bigint, OUT remainder numeric)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r exchange_rate;
    v_fee bigint;
    v_net bigint;
BEGIN
    SELECT * INTO r FROM exchange_rate x
     WHERE x.from_program_id = p_from_program AND x.to_program_id = p_to_program
       AND x.valid_from <= p_at AND (x.valid_until IS NULL OR x.valid_until > p_at)
     ORDER BY x.version DESC
     LIMIT 1;
    IF NOT FOUND OR r.withdrawn THEN
        RAISE EXCEPTION 'no exchange rate in force between these programs' USING ERRCODE = 'LA460';
    END IF;
    IF EXISTS (SELECT 1 FROM exchange_opt_out o
                WHERE o.from_program_id = p_from_program AND o.to_program_id = p_to_program) THEN
        RAISE EXCEPTION 'a merchant of these programs has closed this exchange' USING ERRCODE = 'LA461';
    END IF;
    IF p_points < r.min_points OR p_points > coalesce(r.max_points, p_points) THEN
        RAISE EXCEPTION 'points must be between % and % for this exchange', r.min_points,
            coalesce(r.max_points::text, 'any') USING ERRCODE = 'LA422';
    END IF;
    v_fee := ceil(p_points * r.fee_percent / 100)::bigint + r.fee_points;
    v_net := p_points - v_fee;
    IF v_net <= 0 OR div(v_net::numeric * r.numerator, r.denominator) < 1 THEN
        RAISE EXCEPTION 'too few points: after the fee of % they give no whole point', v_fee
            USING ERRCODE = 'LA422';
    END IF;
    rate_id := r.id;
    fee := v_fee;
    points_out := div(v_net::numeric * r.numerator, r.denominator)::bigint;
    remainder := trunc(mod(v_net::numeric * r.numerator, r.denominator) / r.denominator, 6);
END $$;

-- Lock a quote for an exchange of the member between the memberships: checked, not used.
CREATE FUNCTION exchange_quote_create(p_member_id bigint, p_from_membership bigint,
                                      p_to_membership bigint, p_points bigint,
                                      p_ttl_seconds integer)
RETURNS SETOF exchange_quote
LANGUAGE plpgsql AS $$
DECLARE
    s record;
    d record;
    t record;
BEGIN
    SELECT * INTO s FROM exchange_side(p_from_membership, p_member_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    SELECT * INTO d FROM exchange_side(p_to_membership, p_member_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    IF NOT (s.active AND d.active) THEN
        RAISE EXCEPTION 'program or membership is not active' USING ERRCODE = 'LA423';
    END IF;
    t := exchange_terms(s.program_id, d.program_id, p_points, now());
    RETURN QUERY
    INSERT INTO exchange_quote (member_id, from_membership_id, to_membership_id, rate_id,
                                points_in, fee, points_out, remainder, value, expires_at)
    VALUES (p_member_id, p_from_membership, p_to_membership, t.rate_id, p_points, t.fee,
            t.points_out, t.remainder, t.points_out * d.point_value,
            now() + make_interval(secs => p_ttl_seconds))
    RETURNING *;
END $$;

-- Debit p_points of spendable points from a member account within transaction p_tx
-- (which must hold the account's row lock or take it here), lots soonest-expiring first.
-- Returns the balance after; LA402 when the spendable points (balance less held, less
-- pending and unswept expired lots) do not cover them.
CREATE FUNCTION ledger_debit(p_tx bigint, p_account_id bigint, p_points bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
    v_held bigint;
    v_spendable bigint;
BEGIN
    UPDATE account SET balance = account.balance - p_points
     WHERE id = p_account_id AND account.balance - account.held >= p_points
    RETURNING account.balance, account.held INTO v_balance, v_held;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient points' USING ERRCODE = 'LA402';
    END IF;
    SELECT coalesce(sum(l.remaining), 0) INTO v_spendable
      FROM lot l
     WHERE l.account_id = p_account_id AND l.remaining > 0
       AND l.available_at <= now() AND (l.expires_at IS NULL OR l.expires_at > now());
    IF v_spendable - v_held < p_points THEN
        RAISE EXCEPTION 'insufficient points' USING ERRCODE = 'LA402';
    END IF;
    IF ledger_consume_lots(p_tx, p_account_id, p_points) <> p_points THEN
        RAISE EXCEPTION 'lots do not cover % points', p_points USING ERRCODE = 'LA500';
    END IF;
    RETURN v_balance;
END $$;

-- Exchange points of the member from one membership to another of theirs: at the rate of
-- quote p_quote_id (locked when it was given; p_points NULL or equal to its points) or,
-- without a quote, at the rate in force. One transaction: source debited (lots FIFO),
-- fee to the program's fee account, target credited (a new lot with the target program's
-- expiry, available at once; clawback debt repaid first, as ledger_credit does), the
-- exchange recorded under its transaction's id, and the obligations: the source merchant
-- owes the target merchant points_out × its point value (unless both programs are one
-- merchant's), and the alliance the fee's value. All legs are one INSERT (the balance
-- trigger runs once, on the whole transaction).
CREATE FUNCTION ledger_exchange(
    p_scope text, p_key text, p_request_hash bytea, p_client_id text, p_member_id bigint,
    p_from_membership bigint, p_to_membership bigint, p_points bigint, p_quote_id bigint,
    p_time_zone text)
RETURNS TABLE (exchange_id bigint, transaction_id bigint, member_id bigint,
               from_membership_id bigint, to_membership_id bigint, rate_id bigint,
               quote_id bigint, points_in bigint, fee bigint, points_out bigint,
               remainder numeric, created_at timestamptz, from_entry_id bigint,
               to_entry_id bigint, from_balance bigint, to_balance bigint, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    s record;
    d record;
    t record;
    q exchange_quote;
    v_tx bigint;
    v_points bigint := p_points;
    v_balance bigint;
    v_to_balance bigint;
    v_repaid bigint;
    v_entry bigint;
    v_to_entry bigint;
    v_lot bigint;
BEGIN
    SELECT * INTO s FROM exchange_side(p_from_membership, p_member_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    SELECT * INTO d FROM exchange_side(p_to_membership, p_member_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    v_tx := ledger_claim('exchange', p_scope, p_key, p_request_hash, p_client_id, p_member_id,
                         'exchange', NULL);
    IF v_tx IS NULL THEN
        PERFORM * FROM ledger_replay(p_scope, p_key, p_request_hash);
        RETURN QUERY
        SELECT e.id, e.id, e.member_id, e.from_membership_id, e.to_membership_id,
               e.rate_id, e.quote_id, e.points_in, e.fee, e.points_out, e.remainder,
               e.created_at, f.id, g.id, f.balance_after, g.balance_after, true
          FROM ledger_transaction lt
          JOIN exchange e ON e.id = lt.id
          JOIN posting f ON f.transaction_id = e.id AND f.account_id = s.account_id
          JOIN posting g ON g.transaction_id = e.id AND g.account_id = d.account_id
                        AND g.amount > 0
         WHERE lt.idempotency_scope = p_scope AND lt.idempotency_key = p_key
         ORDER BY g.id
         LIMIT 1;
        RETURN;
    END IF;
    IF NOT (s.active AND d.active) THEN
        RAISE EXCEPTION 'program or membership is not active' USING ERRCODE = 'LA423';
    END IF;
    IF s.program_id = d.program_id THEN
        RAISE EXCEPTION 'an exchange needs two different programs' USING ERRCODE = 'LA422';
    END IF;

    IF p_quote_id IS NOT NULL THEN
        SELECT * INTO q FROM exchange_quote x
         WHERE x.id = p_quote_id AND x.member_id = p_member_id
           AND x.from_membership_id = p_from_membership AND x.to_membership_id = p_to_membership;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'quote not found' USING ERRCODE = 'LA404';
        END IF;
        IF q.expires_at <= now() OR EXISTS (SELECT 1 FROM exchange e WHERE e.quote_id = q.id) THEN
            RAISE EXCEPTION 'the quote has expired or was already used; ask for a new one'
                USING ERRCODE = 'LA462';
        END IF;
        IF v_points IS NOT NULL AND v_points <> q.points_in THEN
            RAISE EXCEPTION 'the quote is for % points', q.points_in USING ERRCODE = 'LA422';
        END IF;
        IF EXISTS (SELECT 1 FROM exchange_opt_out o
                    WHERE o.from_program_id = s.program_id AND o.to_program_id = d.program_id) THEN
            RAISE EXCEPTION 'a merchant of these programs has closed this exchange'
                USING ERRCODE = 'LA461';
        END IF;
        v_points := q.points_in;
        SELECT q.rate_id, q.fee, q.points_out, q.remainder INTO t;
    ELSE
        t := exchange_terms(s.program_id, d.program_id, v_points, now());
    END IF;

    -- The two account rows are updated in id order, so opposite exchanges of one member
    -- cannot deadlock; a refused debit after the credit rolls both back.
    IF s.account_id < d.account_id THEN
        v_balance := ledger_debit(v_tx, s.account_id, v_points);
    END IF;
    -- The target repays clawback debt first, as ledger_credit does.
    UPDATE account
       SET debt = account.debt - least(account.debt, t.points_out),
           balance = account.balance + t.points_out - least(account.debt, t.points_out)
     WHERE id = d.account_id
    RETURNING new.balance, old.debt - new.debt INTO v_to_balance, v_repaid;
    IF s.account_id > d.account_id THEN
        v_balance := ledger_debit(v_tx, s.account_id, v_points);
    END IF;

    WITH legs AS (
        INSERT INTO posting
            (transaction_id, account_id, program_id, member_id, amount, balance_after)
        SELECT v_tx, leg.account_id, leg.program_id, leg.member_id, leg.amount,
               leg.balance_after
          FROM (VALUES
                (1, s.account_id, s.program_id, s.ledger_member_id, -v_points, v_balance),
                (2, (SELECT a.id FROM account a WHERE a.program_id = s.program_id
                       AND a.kind = 'exchanged_out' AND a.membership_id IS NULL),
                 s.program_id, s.ledger_member_id, v_points - t.fee, NULL::bigint),
                (3, CASE WHEN t.fee > 0 THEN
                        (SELECT a.id FROM account a WHERE a.program_id = s.program_id
                            AND a.kind = 'fee' AND a.membership_id IS NULL) END,
                 s.program_id, s.ledger_member_id, t.fee, NULL::bigint),
                (4, d.account_id, d.program_id, d.ledger_member_id, t.points_out,
                 v_to_balance + v_repaid),
                (5, d.account_id, d.program_id, d.ledger_member_id, -v_repaid, v_to_balance),
                (6, (SELECT a.id FROM account a WHERE a.program_id = d.program_id
                       AND a.kind = 'exchanged_in' AND a.membership_id IS NULL),
                 d.program_id, d.ledger_member_id, -t.points_out, NULL::bigint),
                (7, CASE WHEN v_repaid > 0 THEN
                        (SELECT a.id FROM account a WHERE a.program_id = d.program_id
                            AND a.kind = 'clawback' AND a.membership_id IS NULL) END,
                 d.program_id, d.ledger_member_id, v_repaid, NULL::bigint))
               AS leg(n, account_id, program_id, member_id, amount, balance_after)
         WHERE leg.amount <> 0
         ORDER BY leg.n
        RETURNING id, account_id, amount
    )
    SELECT min(legs.id) FILTER (WHERE legs.account_id = s.account_id),
           min(legs.id) FILTER (WHERE legs.account_id = d.account_id AND legs.amount > 0)
      INTO v_entry, v_to_entry
      FROM legs;

    INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount, remaining,
                     available_at, expires_at)
    VALUES (d.account_id, d.program_id, d.ledger_member_id, v_tx, t.points_out,
            t.points_out - v_repaid, now(),
            lot_expiry(d.expiry_policy, d.expiry_value, now(), p_time_zone))
    RETURNING id INTO v_lot;
    IF v_repaid > 0 THEN
        INSERT INTO lot_consumption (transaction_id, lot_id, points) VALUES (v_tx, v_lot, v_repaid);
    END IF;

    INSERT INTO exchange (id, member_id, from_membership_id, to_membership_id, rate_id,
                          quote_id, points_in, fee, points_out, remainder)
    VALUES (v_tx, p_member_id, p_from_membership, p_to_membership, t.rate_id, p_quote_id,
            v_points, t.fee, t.points_out, t.remainder);

    INSERT INTO settlement_obligation (transaction_id, kind, debtor_merchant_id,
                                       creditor_merchant_id, program_id, member_id, points,
                                       point_value, amount, occurred_at)
    SELECT v_tx, o.kind, s.merchant_id, o.creditor, o.program_id, p_member_id, o.points,
           o.point_value, o.points * o.point_value, now()
      FROM (VALUES ('exchange', d.merchant_id, d.program_id, t.points_out, d.point_value),
                   ('exchange_fee', NULL, s.program_id, t.fee, s.point_value))
           AS o(kind, creditor, program_id, points, point_value)
     WHERE o.points > 0 AND o.creditor IS DISTINCT FROM s.merchant_id;

    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.exchanged', s.merchant_id, p_member_id,
            jsonb_build_object('transaction_id', v_tx, 'from_membership_id', p_from_membership,
                               'to_membership_id', p_to_membership,
                               'to_merchant_id', d.merchant_id, 'points_in', v_points,
                               'fee', t.fee, 'points_out', t.points_out,
                               'debt_repaid', v_repaid));

    RETURN QUERY SELECT v_tx, v_tx, p_member_id, p_from_membership, p_to_membership,
                        t.rate_id, p_quote_id, v_points, t.fee, t.points_out, t.remainder,
                        now(), v_entry, v_to_entry, v_balance, v_to_balance, false;
END $$;

-- Spend points of the member's membership at a partner merchant (cross-brand
-- redemption), under the partner's acceptance of the program: a spend to the program's
-- redeemed account, and the obligation of the program's merchant to the partner for the
-- value spent (points × the program's point value).
CREATE FUNCTION ledger_partner_redeem(
    p_scope text, p_key text, p_request_hash bytea, p_client_id text, p_member_id bigint,
    p_membership_id bigint, p_partner_id bigint, p_points bigint, p_reference text)
RETURNS TABLE (transaction_id bigint, entry_id bigint, program_id bigint, balance_after bigint,
               created_at timestamptz, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    s record;
    acc partner_acceptance;
    v_tx bigint;
    v_balance bigint;
    v_entry bigint;
BEGIN
    SELECT * INTO s FROM exchange_side(p_membership_id, p_member_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    v_tx := ledger_claim('partner_redemption', p_scope, p_key, p_request_hash, p_client_id,
                         p_member_id, p_reference,
                         jsonb_build_object('partner_merchant_id', p_partner_id,
                                            'reference', p_reference));
    IF v_tx IS NULL THEN
        RETURN QUERY SELECT * FROM ledger_replay(p_scope, p_key, p_request_hash);
        RETURN;
    END IF;
    IF NOT s.active THEN
        RAISE EXCEPTION 'program or membership is not active' USING ERRCODE = 'LA423';
    END IF;
    IF s.merchant_id = p_partner_id THEN
        RAISE EXCEPTION 'points are spent at their own merchant with spendPoints'
            USING ERRCODE = 'LA422';
    END IF;
    SELECT a.* INTO acc FROM partner_acceptance a
      JOIN merchant m ON m.id = a.merchant_id AND m.status = 'active'
     WHERE a.merchant_id = p_partner_id AND a.program_id = s.program_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'this partner does not accept these points' USING ERRCODE = 'LA463';
    END IF;
    IF p_points < acc.min_points OR p_points > coalesce(acc.max_points, p_points) THEN
        RAISE EXCEPTION 'points must be between % and % at this partner', acc.min_points,
            coalesce(acc.max_points::text, 'any') USING ERRCODE = 'LA422';
    END IF;

    v_balance := ledger_debit(v_tx, s.account_id, p_points);
    v_entry := ledger_post(v_tx, s.account_id,
                           (SELECT a.id FROM account a WHERE a.program_id = s.program_id
                               AND a.kind = 'redeemed' AND a.membership_id IS NULL),
                           s.program_id, s.ledger_member_id, -p_points, v_balance);
    INSERT INTO settlement_obligation (transaction_id, kind, debtor_merchant_id,
                                       creditor_merchant_id, program_id, member_id, points,
                                       point_value, amount, occurred_at)
    VALUES (v_tx, 'partner_redemption', s.merchant_id, p_partner_id, s.program_id, p_member_id,
            p_points, s.point_value, p_points * s.point_value, now());
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    VALUES ('points.spent', s.merchant_id, p_member_id,
            jsonb_build_object('transaction_id', v_tx, 'membership_id', p_membership_id,
                               'program_id', s.program_id, 'points', p_points,
                               'partner_merchant_id', p_partner_id, 'balance_after', v_balance));
    RETURN QUERY SELECT v_tx, v_entry, s.program_id, v_balance, now(), false;
END $$;

-- The obligations of settlement period p_period_id: those up to its end and watermark
-- that no earlier period took. Two disjoint index ranges: on time (from the previous
-- end to this end, on ix_settlement_obligation_occurred) and late (committed after the
-- previous period closed, by id on the primary key), so a period costs what it holds,
-- not what the table holds.
CREATE FUNCTION settlement_period_obligations(p_period_id bigint)
RETURNS SETOF settlement_obligation
LANGUAGE sql STABLE AS $$
    SELECT o.* FROM settlement_period p
      JOIN settlement_obligation o
        ON o.occurred_at >= coalesce(p.previous_ends_at, '-infinity'::timestamptz)
       AND o.occurred_at < p.ends_at AND o.id <= p.watermark
     WHERE p.id = p_period_id
    UNION ALL
    SELECT o.* FROM settlement_period p
      JOIN settlement_obligation o
        ON o.id > p.previous_watermark AND o.id <= p.watermark
       AND o.occurred_at < coalesce(p.previous_ends_at, '-infinity'::timestamptz)
     WHERE p.id = p_period_id
$$;
