-- Ledger functions of migration 0003 (reversal, caps, actions).
SELECT 1;
