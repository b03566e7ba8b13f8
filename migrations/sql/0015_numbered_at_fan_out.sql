-- Outbox events numbered when they are fanned out, not when they are written (migration 0015).
--
-- Since 0010 a BEFORE INSERT trigger gave every event the next number of its aggregate by
-- upserting that aggregate's `outbox_sequence` row: a second row written, locked until
-- commit and logged by every points-moving transaction. Measured with pgbench on the earn
-- function (bench/RESULTS.md, 2026-11-26): PostgreSQL spent about 0.06 ms of a 0.6 ms earn
-- on it, more than the outbox row itself. The fan-out already rewrites each event once (to
-- mark it fanned out); it now also gives the event its aggregate and number there, one
-- counter upsert per aggregate per batch, off the hot path.
--
-- What a number means is unchanged for consumers: 1, 2, 3… per aggregate without gaps, in
-- the order in which events are fanned out, which is the order their deliveries are sent
-- in. For one account's events that is their commit order (each takes the account row
-- before its event id); events of one member in two programs committing at the same
-- moment are numbered in the order the fan-out sees them.

DROP TRIGGER outbox_event_sequence ON outbox_event;
DROP FUNCTION outbox_event_sequence();
DROP FUNCTION outbox_fan_out(integer);

-- Fan out the next p_batch outbox events not yet fanned out, unless another fan-out is
-- running (a transaction-scoped advisory lock, tried, so fan-outs never overlap and both
-- numbers and delivery ids follow the order in which events became visible): number each
-- event within its aggregate (events numbered by 0010's trigger keep their number), make
-- one delivery per subscribed active endpoint of the event's merchant, in event order, and
-- mark the events. Wakes the subscription streams (alliance/events/stream.py) at commit.
-- Returns the events it took and the deliveries it made (0, 0 as well when another
-- fan-out holds the lock).
CREATE FUNCTION outbox_fan_out(p_batch integer, OUT events integer, OUT deliveries integer)
LANGUAGE plpgsql AS $$
BEGIN
    events := 0;
    deliveries := 0;
    IF NOT pg_try_advisory_xact_lock(2003133032) THEN  -- 0x77656268, "wehb"
        RETURN;
    END IF;
    WITH taken AS MATERIALIZED (
        SELECT o.id, o.topic, o.merchant_id, o.member_id, o.aggregate_seq,
               CASE WHEN o.member_id IS NOT NULL THEN 'member:' || o.member_id
                    WHEN o.merchant_id IS NOT NULL THEN 'merchant:' || o.merchant_id
                    ELSE 'alliance' END AS aggregate
          FROM outbox_event o
         WHERE o.delivered_at IS NULL
         ORDER BY o.id LIMIT p_batch
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
