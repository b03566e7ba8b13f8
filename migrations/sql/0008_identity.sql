-- Identity federation (migration 0008): the audit trail gets one narrow way to change.
--
-- Audit records stay append-only, with one exception the right to erasure needs: while
-- the erasing transaction has set `alliance.erasure` to 'on' (SET LOCAL), the `before`
-- and `after` documents of a record may be replaced (redacted). Who did what, to what and
-- when never changes, and nothing is ever deleted.
CREATE FUNCTION audit_record_guard() RETURNS trigger
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

DROP TRIGGER audit_record_append_only ON audit_record;
CREATE TRIGGER audit_record_append_only BEFORE UPDATE OR DELETE ON audit_record
    FOR EACH ROW EXECUTE FUNCTION audit_record_guard();

-- An erased member's personal data, scrubbed recursively from a JSON document, replacing
-- every string value equal to one of p_values (and every value under one of p_keys).
CREATE FUNCTION identity_redact(p_doc jsonb, p_keys text[], p_values text[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(p_doc)
        WHEN 'object' THEN (
            SELECT coalesce(jsonb_object_agg(e.key,
                       CASE WHEN e.key = ANY (p_keys) THEN to_jsonb('[erased]'::text)
                            ELSE identity_redact(e.value, p_keys, p_values) END), '{}'::jsonb)
              FROM jsonb_each(p_doc) e)
        WHEN 'array' THEN (
            SELECT coalesce(jsonb_agg(identity_redact(e.value, p_keys, p_values)
                                      ORDER BY e.ordinality), '[]'::jsonb)
              FROM jsonb_array_elements(p_doc) WITH ORDINALITY e)
        WHEN 'string' THEN
            CASE WHEN p_doc #>> '{}' = ANY (p_values) THEN to_jsonb('[erased]'::text)
                 ELSE p_doc END
        ELSE p_doc
    END
$$;
