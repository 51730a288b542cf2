// knexfile for the tests (CommonJS). Every value comes from the environment:
//   DATABASE_URL           connection URL; when unset, node-postgres reads the PG* variables
//   KNEX_MIGRATIONS_DIR    migrations directory (required; give it absolute: the knex CLI
//                          changes the working directory to this file's folder)
//   KNEX_MIGRATIONS_TABLE  ledger table (default knex_migrations; the lock table is <table>_lock)
//   KNEX_MIGRATIONS_SCHEMA ledger schema (default none: unqualified, i.e. search_path)
//   KNEX_DISABLE_TRANSACTIONS=1  migrations.disableTransactions
// e.g. KNEX_MIGRATIONS_DIR=$PWD/examples/knex DATABASE_URL=... \
//      npx --prefix tests/tools/node knex --knexfile tests/tools/node/knexfile.js migrate:latest
const path = require("node:path");

if (!process.env.KNEX_MIGRATIONS_DIR) {
  throw new Error("knexfile.js: set KNEX_MIGRATIONS_DIR to the migrations directory");
}

const migrations = {
  directory: path.resolve(process.env.KNEX_MIGRATIONS_DIR),
  tableName: process.env.KNEX_MIGRATIONS_TABLE || "knex_migrations",
};
if (process.env.KNEX_MIGRATIONS_SCHEMA) migrations.schemaName = process.env.KNEX_MIGRATIONS_SCHEMA;
if (process.env.KNEX_DISABLE_TRANSACTIONS === "1") migrations.disableTransactions = true;

module.exports = {
  client: "pg",
  // An object, not the bare string: knex 3.3.0 turns a string `connection` into
  // { filename: ... } (sqlite style) and node-postgres then silently falls back
  // to the PG* variables / localhost.
  connection: process.env.DATABASE_URL ? { connectionString: process.env.DATABASE_URL } : {},
  pool: { min: 0, max: 1 },
  migrations,
};
