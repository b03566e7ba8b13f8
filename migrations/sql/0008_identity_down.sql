DROP FUNCTION identity_redact(jsonb, text[], text[]);
DROP TRIGGER audit_record_append_only ON audit_record;
CREATE TRIGGER audit_record_append_only BEFORE UPDATE OR DELETE ON audit_record
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
DROP FUNCTION audit_record_guard();
