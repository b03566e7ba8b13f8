-- Undo migrations/sql/0006_holds.sql.
DROP FUNCTION ledger_hold_refund(bigint, bigint, text, bytea, bigint, text, text);
DROP FUNCTION ledger_hold_release_expired(timestamptz, integer);
DROP FUNCTION ledger_hold_void(bigint, bigint, bigint);
DROP FUNCTION ledger_hold_capture(bigint, bigint, bigint, bigint, text);
DROP FUNCTION ledger_hold_locked(bigint, bigint, bigint);
DROP FUNCTION ledger_hold_authorize(text, text, bytea, bigint, bigint, bigint, bigint, text, integer, text);
DROP FUNCTION ledger_consume_lots(bigint, bigint, bigint, boolean);
