-- Outbox sequence numbers per aggregate (migration 0010).
--
-- Every outbox event gets the next number of its aggregate: the member it concerns
-- (`member:<id>`), else its merchant (`merchant:<id>`), else the alliance. Consumers
-- (webhooks, subscriptions) use it to order and to spot gaps. The counter row of a
-- member is only ever taken by transactions of that member, which already serialise on
-- the member's account row, so it adds no contention to the ledger's hot path.
CREATE FUNCTION outbox_event_sequence() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.aggregate := CASE WHEN NEW.member_id IS NOT NULL THEN 'member:' || NEW.member_id
                          WHEN NEW.merchant_id IS NOT NULL THEN 'merchant:' || NEW.merchant_id
                          ELSE 'alliance' END;
    INSERT INTO outbox_sequence AS s (aggregate, seq) VALUES (NEW.aggregate, 1)
    ON CONFLICT (aggregate) DO UPDATE SET seq = s.seq + 1
    RETURNING s.seq INTO NEW.aggregate_seq;
    RETURN NEW;
END $$;

CREATE TRIGGER outbox_event_sequence BEFORE INSERT ON outbox_event
    FOR EACH ROW EXECUTE FUNCTION outbox_event_sequence();

CREATE TRIGGER webhook_attempt_append_only BEFORE UPDATE OR DELETE ON webhook_attempt
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
