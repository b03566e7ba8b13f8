-- The webhook fan-out as one call (migration 0014).
--
-- The dispatcher inside every `serve` worker fans out new outbox events several times a
-- second under load. As an ORM transaction it took five round trips (BEGIN, the advisory
-- lock, the statement, NOTIFY, COMMIT) and the session's Python on the worker that also
-- serves the API: about 0.05 ms of the application's CPU per award at 1,000 awards/s
-- (bench/RESULTS.md, outbox on/off). Now it is one function call on an autocommit
-- connection.

-- Fan out the next p_batch outbox events not yet fanned out, unless another fan-out is
-- running (a transaction-scoped advisory lock, tried, so fan-outs never overlap and
-- delivery ids follow the order in which events became visible): one delivery per
-- subscribed active endpoint of the event's merchant, in event order, and the events
-- marked. Wakes the subscription streams (alliance/events/stream.py) at commit. Returns
-- how many events it took (0 as well when another fan-out holds the lock).
CREATE FUNCTION outbox_fan_out(p_batch integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_taken integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(2003133032) THEN  -- 0x77656268, "wehb"
        RETURN 0;
    END IF;
    WITH events AS (
        UPDATE outbox_event SET delivered_at = now()
         WHERE id IN (SELECT id FROM outbox_event WHERE delivered_at IS NULL
                       ORDER BY id LIMIT p_batch)
        RETURNING id, topic, merchant_id, member_id
    ), deliveries AS (
        INSERT INTO webhook_delivery (endpoint_id, event_id, merchant_id, ordering_key)
        SELECT e.id, v.id, v.merchant_id, coalesce(v.member_id, 0)
          FROM events v
          JOIN webhook_endpoint e ON e.merchant_id = v.merchant_id AND e.status = 'active'
           AND (v.topic = ANY (e.event_types) OR '*' = ANY (e.event_types))
         ORDER BY v.id, e.id
        ON CONFLICT DO NOTHING
    )
    SELECT count(*) INTO v_taken FROM events;
    IF v_taken > 0 THEN
        PERFORM pg_notify('outbox_event', '');
    END IF;
    RETURN v_taken;
END $$;
