-- Require a note on every order (full scan to check existing rows).
ALTER TABLE orders ALTER COLUMN note SET NOT NULL;
