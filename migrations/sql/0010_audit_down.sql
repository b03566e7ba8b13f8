-- Undo migration 0010's functions and triggers (its tables and columns go in Python).
DROP FUNCTION ledger_adjust(text, text, bytea, text, bigint, bigint, bigint, text, text, jsonb);
DROP TRIGGER audit_record_chain ON audit_record;
DROP FUNCTION audit_record_chain();
DROP FUNCTION audit_record_hash(audit_record);
DROP TRIGGER outbox_event_sequence ON outbox_event;
DROP FUNCTION outbox_event_sequence();
