-- Undo migrations/sql/0003_validity.sql.
SELECT 1;
