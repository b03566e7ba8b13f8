-- Undo migration 0010's functions and triggers (its tables and columns go in Python).
DROP FUNCTION ledger_adjust(text, text, bytea, text, bigint, bigint, bigint, text, text, jsonb);
DROP TRIGGER audit_record_chain ON audit_record;
DROP FUNCTION audit_record_chain();
DROP FUNCTION audit_record_hash(audit_record);
DROP TRIGGER outbox_event_sequence ON outbox_event;
DROP FUNCTION outbox_event_sequence();
DROP FUNCTION audit_content_digest(jsonb, jsonb);
-- Erasure's redaction as 0008 had it.
CREATE OR REPLACE FUNCTION audit_record_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('alliance.erasure', true) = 'on'
       AND NEW.id = OLD.id AND NEW.actor = OLD.actor
       AND NEW.client_id IS NOT DISTINCT FROM OLD.client_id AND NEW.role = OLD.role
       AND NEW.action = OLD.action AND NEW.target = OLD.target
       AND NEW.request_id IS NOT DISTINCT FROM OLD.request_id
       AND NEW.created_at = OLD.created_at THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'LA500';
END $$;
