-- Add a per-order token with a volatile default (forces a table rewrite).
ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();
