-- Baseline schema for the comparison migrations.
CREATE TABLE customers (
    id bigint PRIMARY KEY
);

CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer_id bigint,
    note        text,
    total       numeric
);
