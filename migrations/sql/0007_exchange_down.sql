-- Undo 0007_exchange.sql (the tables are dropped by the migration).
DROP FUNCTION settlement_period_obligations(bigint);
DROP FUNCTION ledger_partner_redeem(text, text, bytea, text, bigint, bigint, bigint, bigint, text);
DROP FUNCTION ledger_exchange(text, text, bytea, text, bigint, bigint, bigint, bigint, bigint, text);
DROP FUNCTION ledger_debit(bigint, bigint, bigint);
DROP FUNCTION exchange_quote_create(bigint, bigint, bigint, bigint, integer);
DROP FUNCTION exchange_terms(bigint, bigint, bigint, timestamptz);
DROP FUNCTION exchange_side(bigint, bigint);
