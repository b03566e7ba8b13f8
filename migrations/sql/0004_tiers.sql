-- Member tiers (migration 0004): qualifying activity, the upgrade on the event that
-- reaches a tier, and the scheduled review that starts grace periods and moves down.
--
-- A membership's `membership_tier` row names the tier it was given, a row of the ladder
-- version current at the time. Ladders change only by new versions, so the tier a
-- membership holds *now* is that tier carried onto the current version (`tier_held`):
-- the tier with the same code, or where the new version dropped the code, the highest
-- tier ranked no higher.
--
-- Every change of a membership's tier happens under the lock of its member account row:
-- the lock every ledger movement of the membership already takes. So the earn and
-- reversal functions can call tier_record_activity after their balance update without a
-- new lock order, concurrent events of one membership are applied one after another
-- (each sees the state the previous one committed), and the review job, which locks the
-- same rows with SKIP LOCKED, never waits for a movement nor decides on a stale total.

-- Ladder versions, their tiers, tier changes and activity are facts the history reads.
CREATE TRIGGER tier_ladder_append_only BEFORE UPDATE OR DELETE ON tier_ladder
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER tier_append_only BEFORE UPDATE OR DELETE ON tier
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER tier_change_append_only BEFORE UPDATE OR DELETE ON tier_change
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER qualifying_activity_append_only BEFORE UPDATE OR DELETE ON qualifying_activity
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- The program's current ladder version; NULL when the program has no tiers.
CREATE FUNCTION tier_current_ladder(p_program_id bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT l.id FROM tier_ladder l WHERE l.program_id = p_program_id
     ORDER BY l.version DESC LIMIT 1
$$;

-- The tier of ladder p_ladder_id that stands for the tier given (a tier of any version of
-- the same program's ladder; NULL: never placed, which is the entry tier): the tier with
-- the same code, else the highest tier ranked no higher than the one given.
CREATE FUNCTION tier_held(p_ladder_id bigint, p_given_tier_id bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT t.id
      FROM tier t
      LEFT JOIN tier g ON g.id = p_given_tier_id
     WHERE t.ladder_id = p_ladder_id
       AND (t.code = g.code OR t.rank <= coalesce(g.rank, 0))
     ORDER BY t.code = g.code DESC NULLS LAST, t.rank DESC
     LIMIT 1
$$;

-- The highest tier of ladder p_ladder_id that a qualifying total reaches (the entry tier
-- whatever the total).
CREATE FUNCTION tier_reached(p_ladder_id bigint, p_total numeric) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT t.id FROM tier t
     WHERE t.ladder_id = p_ladder_id AND (t.rank = 0 OR t.threshold <= p_total)
     ORDER BY t.rank DESC LIMIT 1
$$;

-- A membership's qualifying total in the rolling window of p_window_days ending at p_now:
-- purchase amounts (basis 'spend') or rule-earned points ('points'); refunds subtract.
CREATE FUNCTION tier_qualifying_total(
    p_membership_id bigint, p_basis text, p_window_days integer, p_now timestamptz)
RETURNS numeric
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(CASE WHEN p_basis = 'spend' THEN a.spend ELSE a.points END), 0)
      FROM qualifying_activity a
     WHERE a.membership_id = p_membership_id
       AND a.occurred_at > p_now - make_interval(days => p_window_days)
$$;

-- Where a membership stands at p_now (what tierProgress shows): the tier held, the next
-- one up, the qualifying total and where its window starts, a pending downgrade.
-- No row when the program has no tiers.
CREATE FUNCTION tier_standing(p_membership_id bigint, p_now timestamptz)
RETURNS TABLE (ladder_id bigint, held_tier_id bigint, next_tier_id bigint,
               qualifying_total numeric, window_start timestamptz, downgrade_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT l.id, h.id, n.id,
           tier_qualifying_total(m.id, l.basis, l.window_days, p_now),
           p_now - make_interval(days => l.window_days), mt.downgrade_at
      FROM membership m
      JOIN tier_ladder l ON l.id = tier_current_ladder(m.program_id)
      LEFT JOIN membership_tier mt ON mt.membership_id = m.id
      JOIN tier h ON h.id = tier_held(l.id, mt.tier_id)
      LEFT JOIN LATERAL (SELECT t.id FROM tier t
                          WHERE t.ladder_id = l.id AND t.rank > h.rank
                          ORDER BY t.rank LIMIT 1) n ON true
     WHERE m.id = p_membership_id
$$;

-- Bring one membership's tier up to date at p_now. The caller holds the lock of the
-- membership's account row.
--
-- On an event (p_review false): move up to the highest tier the rolling total reaches,
-- never down, and cancel a pending downgrade that the total covers again.
-- On review (p_review true), also: when the total has fallen below the threshold of the
-- tier held, start the grace period (record when it ends); once it has ended with the
-- total still short, move down to the highest tier the total reaches.
-- Either way a tier whose code the current ladder version dropped is replaced by the tier
-- standing for it (`ladder_changed`).
--
-- One row per thing done: (change, tier_from, tier_to), change being a reason of
-- tier_change (a tier change, recorded with its 'tier.changed' event), 'grace_started'
-- or 'grace_cancelled'.
CREATE FUNCTION tier_settle(p_membership_id bigint, p_now timestamptz, p_review boolean)
RETURNS TABLE (change text, tier_from text, tier_to text)
LANGUAGE plpgsql AS $$
DECLARE
    v_state membership_tier%ROWTYPE;
    v_ladder tier_ladder%ROWTYPE;
    v_given tier%ROWTYPE;
    v_held tier%ROWTYPE;
    v_reached tier%ROWTYPE;
    v_from tier%ROWTYPE;
    v_to tier%ROWTYPE;
    v_reason text;
    v_total numeric;
    v_due timestamptz;
BEGIN
    SELECT * INTO v_state FROM membership_tier mt WHERE mt.membership_id = p_membership_id;
    IF NOT FOUND THEN
        RETURN;  -- no qualifying activity yet: the entry tier
    END IF;
    SELECT * INTO v_ladder FROM tier_ladder l WHERE l.id = tier_current_ladder(v_state.program_id);
    IF NOT FOUND THEN
        RETURN;  -- no tiers (yet); the activity counts once there are
    END IF;
    SELECT * INTO v_given FROM tier t WHERE t.id = v_state.tier_id;
    SELECT * INTO v_held FROM tier t WHERE t.id = tier_held(v_ladder.id, v_state.tier_id);
    v_total := tier_qualifying_total(p_membership_id, v_ladder.basis, v_ladder.window_days,
                                     p_now);
    SELECT * INTO v_reached FROM tier t WHERE t.id = tier_reached(v_ladder.id, v_total);
    IF v_given.id IS NULL THEN
        v_from := v_held;
    ELSE
        v_from := v_given;
    END IF;

    IF v_reached.rank > v_held.rank THEN
        -- Up. A review finds a membership below its total only when a new ladder version
        -- lowered the bar (events move up as they happen).
        v_to := v_reached;
        v_reason := CASE WHEN p_review AND v_given.ladder_id IS DISTINCT FROM v_ladder.id
                         THEN 'ladder_changed' ELSE 'qualified' END;
    ELSIF v_given.id IS NOT NULL AND v_given.code <> v_held.code
          AND (v_given.rank > 0 OR v_held.rank > 0) THEN
        -- The current version dropped the code: the tier standing for it. (A renamed entry
        -- tier is no change for its members.) The grace of the old tier does not carry over.
        v_to := v_held;
        v_reason := 'ladder_changed';
    ELSIF p_review AND v_held.rank > 0 AND v_total < v_held.threshold THEN
        v_due := coalesce(v_state.downgrade_at,
                          p_now + make_interval(days => v_ladder.grace_days));
        IF v_due <= p_now THEN
            v_to := v_reached;
            v_reason := 'downgraded';
        ELSIF v_state.downgrade_at IS NULL THEN
            UPDATE membership_tier
               SET tier_id = v_held.id, downgrade_at = v_due, updated_at = now()
             WHERE membership_id = p_membership_id;
            RETURN QUERY SELECT 'grace_started'::text, v_held.code, v_held.code;
            RETURN;
        END IF;
    END IF;

    IF v_to.id IS NOT NULL THEN
        UPDATE membership_tier SET tier_id = v_to.id, downgrade_at = NULL, updated_at = now()
         WHERE membership_id = p_membership_id;
        INSERT INTO tier_change (membership_id, program_id, member_id, from_tier_id, to_tier_id,
                                 reason, qualifying_total)
        VALUES (p_membership_id, v_state.program_id, v_state.member_id, v_from.id, v_to.id,
                v_reason, v_total);
        INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
        SELECT 'tier.changed', p.merchant_id, v_state.member_id,
               jsonb_build_object('membership_id', p_membership_id,
                                  'program_id', v_state.program_id,
                                  'from', v_from.code, 'from_rank', v_from.rank,
                                  'to', v_to.code, 'to_rank', v_to.rank, 'reason', v_reason,
                                  'qualifying_total', v_total,
                                  'ladder_version', v_ladder.version)
          FROM program p WHERE p.id = v_state.program_id;
        RETURN QUERY SELECT v_reason, v_from.code, v_to.code;
    ELSIF v_state.downgrade_at IS NOT NULL AND v_total >= v_held.threshold THEN
        UPDATE membership_tier SET tier_id = v_held.id, downgrade_at = NULL, updated_at = now()
         WHERE membership_id = p_membership_id;
        RETURN QUERY SELECT 'grace_cancelled'::text, v_held.code, v_held.code;
    ELSIF v_state.tier_id IS DISTINCT FROM v_held.id THEN
        -- The same tier on a newer ladder version (or the entry tier, first placed): the
        -- membership's tier did not change, so nothing is recorded.
        UPDATE membership_tier SET tier_id = v_held.id, updated_at = now()
         WHERE membership_id = p_membership_id;
    END IF;
END $$;

-- Record what a ledger transaction contributes to a membership's rolling total and, on
-- that event, move the membership up to the highest tier its total now reaches (never
-- down: refunds, negative amounts, lower the total and leave the downgrade to the review).
-- Returns a row (tier_from, tier_to) of tier codes when the tier changed, none otherwise.
--
-- Meant to be called inside the ledger transaction it describes (an earn, a reversal).
-- Idempotent per (membership, transaction): a second call for the same pair does nothing.
-- A refund should carry the purchase's p_occurred_at, so that it leaves the window
-- together with the contribution it undoes. LA404 when the membership does not exist.
CREATE FUNCTION tier_record_activity(
    p_membership_id bigint, p_transaction_id bigint, p_occurred_at timestamptz,
    p_spend numeric, p_points bigint)
RETURNS TABLE (tier_from text, tier_to text)
LANGUAGE plpgsql AS $$
DECLARE
    v_account record;
BEGIN
    -- The membership's lock (a no-op when the calling movement already holds it).
    SELECT a.program_id, a.member_id INTO v_account
      FROM account a WHERE a.membership_id = p_membership_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'membership not found' USING ERRCODE = 'LA404';
    END IF;
    IF p_spend = 0 AND p_points = 0 THEN
        RETURN;
    END IF;
    INSERT INTO qualifying_activity (membership_id, transaction_id, member_id, occurred_at,
                                     spend, points)
    VALUES (p_membership_id, p_transaction_id, v_account.member_id, p_occurred_at, p_spend,
            p_points)
    ON CONFLICT (membership_id, transaction_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO membership_tier (membership_id, program_id, member_id)
    VALUES (p_membership_id, v_account.program_id, v_account.member_id)
    ON CONFLICT (membership_id) DO NOTHING;
    RETURN QUERY
        SELECT s.tier_from, s.tier_to FROM tier_settle(p_membership_id, now(), false) s
         WHERE s.change NOT IN ('grace_started', 'grace_cancelled');
END $$;

-- Review the next p_limit tier rows after the cursor p_after_membership_id (in membership
-- order; only those of p_memberships when given): settle each that may need it (a
-- membership above the entry tier, with a pending downgrade, or placed on an older ladder
-- version) as of p_now. Returns the counts, the memberships skipped because another
-- transaction held their lock (for a later pass), and the cursor to continue from (NULL
-- when no row is left past it).
--
-- Each call is one short transaction; accounts are locked in id order with SKIP LOCKED,
-- so a batch never waits and two batches never deadlock. Settling is idempotent, so a
-- re-run or a concurrent run changes nothing twice.
CREATE FUNCTION tier_review(
    p_now timestamptz, p_after_membership_id bigint, p_limit integer,
    p_memberships bigint[] DEFAULT NULL)
RETURNS TABLE (reviewed integer, moved integer, graced integer, cancelled integer,
               busy bigint[], next_membership_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_next bigint;
    v_candidates bigint[];
    v_locked bigint[];
    v_membership bigint;
    v_change text;
    v_reviewed integer := 0;
    v_moved integer := 0;
    v_graced integer := 0;
    v_cancelled integer := 0;
BEGIN
    SELECT max(s.membership_id), array_agg(s.membership_id) FILTER (WHERE s.due)
      INTO v_next, v_candidates
      FROM (SELECT mt.membership_id,
                   l.id IS NOT NULL AND (g.ladder_id IS DISTINCT FROM l.id OR g.rank > 0
                                         OR mt.downgrade_at IS NOT NULL) AS due
              FROM membership_tier mt
              LEFT JOIN tier g ON g.id = mt.tier_id
              CROSS JOIN LATERAL (SELECT tier_current_ladder(mt.program_id) AS id) l
             WHERE mt.membership_id > p_after_membership_id
               AND (p_memberships IS NULL OR mt.membership_id = ANY (p_memberships))
             ORDER BY mt.membership_id
             LIMIT p_limit) s;
    IF v_next IS NULL THEN
        RETURN QUERY SELECT 0, 0, 0, 0, '{}'::bigint[], NULL::bigint;
        RETURN;
    END IF;
    SELECT array_agg(locked.membership_id) INTO v_locked
      FROM (SELECT a.membership_id FROM account a
             WHERE a.membership_id = ANY (v_candidates)
             ORDER BY a.id FOR UPDATE SKIP LOCKED) locked;
    FOREACH v_membership IN ARRAY coalesce(v_locked, '{}') LOOP
        v_reviewed := v_reviewed + 1;
        FOR v_change IN SELECT s.change FROM tier_settle(v_membership, p_now, true) s LOOP
            CASE v_change
                WHEN 'grace_started' THEN v_graced := v_graced + 1;
                WHEN 'grace_cancelled' THEN v_cancelled := v_cancelled + 1;
                ELSE v_moved := v_moved + 1;
            END CASE;
        END LOOP;
    END LOOP;
    RETURN QUERY
        SELECT v_reviewed, v_moved, v_graced, v_cancelled,
               coalesce((SELECT array_agg(c) FROM unnest(v_candidates) c
                          WHERE c <> ALL (coalesce(v_locked, '{}'))), '{}'),
               v_next;
END $$;
