#!/usr/bin/env node
// drizzle-migrate.mjs FOLDER: applies the drizzle-kit migrations in FOLDER
// (FOLDER/meta/_journal.json + FOLDER/<tag>.sql) with drizzle-orm's own
// migrator, as an application calling migrate() at start-up does.
// Connection: DATABASE_URL, or the PG* variables when it is unset.
// Optional: DRIZZLE_MIGRATIONS_TABLE, DRIZZLE_MIGRATIONS_SCHEMA (the
// migrator's migrationsTable / migrationsSchema; defaults
// __drizzle_migrations / drizzle). Prints nothing on success; on failure
// prints the error to stderr and exits 1.
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";

const folder = process.argv[2];
if (!folder || process.argv.length > 3) {
  console.error("usage: drizzle-migrate.mjs FOLDER");
  process.exit(2);
}
const client = new pg.Client(process.env.DATABASE_URL ? { connectionString: process.env.DATABASE_URL } : {});
let code = 0;
try {
  await client.connect();
  const config = { migrationsFolder: folder };
  if (process.env.DRIZZLE_MIGRATIONS_TABLE) config.migrationsTable = process.env.DRIZZLE_MIGRATIONS_TABLE;
  if (process.env.DRIZZLE_MIGRATIONS_SCHEMA) config.migrationsSchema = process.env.DRIZZLE_MIGRATIONS_SCHEMA;
  await migrate(drizzle(client), config);
} catch (e) {
  console.error(e && e.stack ? e.stack : String(e));
  if (e && e.cause) console.error("cause:", e.cause.message ?? String(e.cause));
  code = 1;
} finally {
  await client.end().catch(() => {});
}
process.exit(code);
