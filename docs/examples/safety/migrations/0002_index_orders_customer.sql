-- Index orders by customer (non-concurrent build).
CREATE INDEX orders_customer_idx ON orders (customer_id);
