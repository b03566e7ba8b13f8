-- A debit of one lot takes it by its primary key (migration 0020).
--
-- ledger_take_lots consumed the lots it chose with one statement over the arrays of
-- their ids and points (`UPDATE lot ... FROM unnest(v_lots, v_points)`). PL/pgSQL could
-- not keep a plan of it: a generic plan expects a hundred rows from the arrays and was
-- always dearer than a custom plan for the actual one, so the statement was planned on
-- every call (0.12 ms), about as much as it cost to run. Under the exchange benchmark
-- it was planned 14,249 times in 14,217 calls, 7 % of the exchange's PostgreSQL time
-- (pg_stat_statements, bench/RESULTS.md 2026-11-26). Nearly every debit takes a single
-- lot: that one is now updated and recorded by two statements on the primary key,
-- whose generic plans are the right ones. Debits of several lots keep the one
-- statement, whose planning is small beside their work.
--
-- Otherwise as 0012: see 0012_lots.sql.

CREATE OR REPLACE FUNCTION ledger_take_lots(p_tx bigint, p_account_id bigint, p_points bigint,
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
    IF cardinality(v_lots) = 1 THEN
        UPDATE lot SET remaining = lot.remaining - v_points[1] WHERE lot.id = v_lots[1];
        INSERT INTO lot_consumption (transaction_id, lot_id, points)
        VALUES (p_tx, v_lots[1], v_points[1]);
    ELSIF v_taken > 0 THEN
        WITH taken AS (SELECT * FROM unnest(v_lots, v_points) AS t (lot_id, points)),
             consumed AS (UPDATE lot SET remaining = lot.remaining - taken.points
                            FROM taken WHERE lot.id = taken.lot_id
                          RETURNING lot.id, taken.points)
        INSERT INTO lot_consumption (transaction_id, lot_id, points)
        SELECT p_tx, consumed.id, consumed.points FROM consumed;
    END IF;
    RETURN true;
END $$;
