-- The fan-out takes its batch's ids first, then works on those ids (migration 0019).
--
-- 0015's function was one statement whose batch was `ORDER BY id LIMIT p_batch` inside
-- the first of six CTEs. PL/pgSQL could not keep a generic plan of it (with the limit
-- unknown it read the whole table: 21 ms), so it planned the statement on every call,
-- which cost more than the work at the batch sizes the dispatcher runs (10-20 events
-- every 20 ms). With the ids taken first the statement's generic plan is the right one
-- (`id = ANY (ids)`, the primary key), and a call that finds nothing pending returns
-- after one index probe. Measured on a 100,000-member bench database, batches of 17
-- events of different members: 80-108 -> 50-60 microseconds of PostgreSQL CPU per
-- event (bench/RESULTS.md, 2026-11-26).
--
-- What it does is unchanged: see 0015_numbered_at_fan_out.sql.

CREATE OR REPLACE FUNCTION outbox_fan_out(p_batch integer, OUT events integer, OUT deliveries integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    events := 0;
    deliveries := 0;
    IF NOT pg_try_advisory_xact_lock(2003133032) THEN  -- 0x77656268, "wehb"
        RETURN;
    END IF;
    SELECT array_agg(p.id ORDER BY p.id) INTO v_ids
      FROM (SELECT o.id FROM outbox_event o
             WHERE o.delivered_at IS NULL ORDER BY o.id LIMIT p_batch) p;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    WITH taken AS MATERIALIZED (
        SELECT o.id, o.topic, o.merchant_id, o.member_id, o.aggregate_seq,
               CASE WHEN o.member_id IS NOT NULL THEN 'member:' || o.member_id
                    WHEN o.merchant_id IS NOT NULL THEN 'merchant:' || o.merchant_id
                    ELSE 'alliance' END AS aggregate
          FROM outbox_event o
         WHERE o.id = ANY (v_ids)
    ), fresh AS (
        SELECT t.id, t.aggregate, row_number() OVER (PARTITION BY t.aggregate ORDER BY t.id) AS n
          FROM taken t WHERE t.aggregate_seq IS NULL
    ), counts AS (
        SELECT f.aggregate, max(f.n) AS n FROM fresh f GROUP BY f.aggregate
    ), counters AS (
        INSERT INTO outbox_sequence AS s (aggregate, seq)
        SELECT k.aggregate, k.n FROM counts k ORDER BY k.aggregate
        ON CONFLICT (aggregate) DO UPDATE SET seq = s.seq + excluded.seq
        RETURNING s.aggregate, s.seq
    ), marked AS (
        UPDATE outbox_event o
           SET delivered_at = now(), aggregate = t.aggregate,
               aggregate_seq = coalesce(t.aggregate_seq, c.seq - k.n + f.n)
          FROM taken t
          LEFT JOIN fresh f ON f.id = t.id
          LEFT JOIN counts k ON k.aggregate = f.aggregate
          LEFT JOIN counters c ON c.aggregate = f.aggregate
         WHERE o.id = t.id
        RETURNING o.id, o.topic, o.merchant_id, o.member_id
    ), made AS (
        INSERT INTO webhook_delivery (endpoint_id, event_id, merchant_id, ordering_key)
        SELECT e.id, v.id, v.merchant_id, coalesce(v.member_id, 0)
          FROM marked v
          JOIN webhook_endpoint e ON e.merchant_id = v.merchant_id AND e.status = 'active'
           AND (v.topic = ANY (e.event_types) OR '*' = ANY (e.event_types))
         ORDER BY v.id, e.id
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM marked), (SELECT count(*) FROM made) INTO events, deliveries;
    IF events > 0 THEN
        PERFORM pg_notify('outbox_event', '');
    END IF;
END $$;
