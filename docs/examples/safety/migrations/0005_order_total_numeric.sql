-- Constrain order totals to numeric(12,2) (type change rewrites the table).
ALTER TABLE orders ALTER COLUMN total TYPE numeric(12,2);
