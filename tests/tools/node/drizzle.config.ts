// drizzle-kit config for the tests. Every value comes from the environment:
//   DRIZZLE_OUT     migrations folder (required): what `generate` writes and `migrate` applies
//   DRIZZLE_SCHEMA  schema file for `generate` (default examples/drizzle/schema.ts beside this file)
//   DATABASE_URL    connection for `migrate` (not needed by `generate`)
//   DRIZZLE_MIGRATIONS_TABLE / DRIZZLE_MIGRATIONS_SCHEMA  ledger name (optional)
// Relative paths are taken from the working directory. From the repository root:
//   DRIZZLE_OUT=/tmp/x tests/tools/node/node_modules/.bin/drizzle-kit generate \
//     --config tests/tools/node/drizzle.config.ts --name init
//   DRIZZLE_OUT=/tmp/x DATABASE_URL=... tests/tools/node/node_modules/.bin/drizzle-kit migrate \
//     --config tests/tools/node/drizzle.config.ts
import path from "node:path";
import { defineConfig } from "drizzle-kit";

// drizzle-kit 0.31.11 reads existing snapshots at "./" + out, so an absolute
// out breaks the second `generate` (ENOENT .//tmp/...): pass it relative.
const out = path.relative(process.cwd(), path.resolve(process.env.DRIZZLE_OUT || "./drizzle-out-unset")) || ".";

const migrations: { table?: string; schema?: string } = {};
if (process.env.DRIZZLE_MIGRATIONS_TABLE) migrations.table = process.env.DRIZZLE_MIGRATIONS_TABLE;
if (process.env.DRIZZLE_MIGRATIONS_SCHEMA) migrations.schema = process.env.DRIZZLE_MIGRATIONS_SCHEMA;

export default defineConfig({
  dialect: "postgresql",
  schema: process.env.DRIZZLE_SCHEMA ? path.resolve(process.env.DRIZZLE_SCHEMA) : path.join(__dirname, "examples/drizzle/schema.ts"),
  out,
  dbCredentials: { url: process.env.DATABASE_URL || "postgres://unset" },
  migrations,
});
