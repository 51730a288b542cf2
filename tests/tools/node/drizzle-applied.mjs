#!/usr/bin/env node
// drizzle-applied.mjs FOLDER: prints, as one JSON object on stdout, what
// drizzle-orm's migrator would see for FOLDER:
//   {"table": "drizzle.__drizzle_migrations", "exists": true,
//    "rows": [{"id":1,"hash":"<sha256 hex>","created_at":"<ms>"}, ...],   (ordered by id)
//    "migrations": [{"tag":"0000_x","when":<ms>,"hash":"<sha256 hex>",
//                    "pending":false,"hash_in_ledger":true}, ...]}
// "pending" uses the migrator's own rule (drizzle-orm/pg-core/dialect.js):
// pending iff there is no ledger row, or the created_at of the row with the
// greatest created_at is < the entry's journal "when". Hashes are never
// compared by drizzle; hash_in_ledger is informational. Reads only; creates
// nothing. Connection and table/schema env as for drizzle-migrate.mjs.
import fs from "node:fs";
import pg from "pg";
import { readMigrationFiles } from "drizzle-orm/migrator";

const folder = process.argv[2];
if (!folder || process.argv.length > 3) {
  console.error("usage: drizzle-applied.mjs FOLDER");
  process.exit(2);
}
const table = process.env.DRIZZLE_MIGRATIONS_TABLE || "__drizzle_migrations";
const schema = process.env.DRIZZLE_MIGRATIONS_SCHEMA || "drizzle";
const ident = (s) => `"${s.replace(/"/g, '""')}"`;
const client = new pg.Client(process.env.DATABASE_URL ? { connectionString: process.env.DATABASE_URL } : {});
let code = 0;
try {
  const files = readMigrationFiles({ migrationsFolder: folder });
  const journal = JSON.parse(fs.readFileSync(`${folder}/meta/_journal.json`, "utf8"));
  await client.connect();
  const reg = await client.query("select to_regclass($1) is not null as exists", [`${ident(schema)}.${ident(table)}`]);
  const exists = reg.rows[0].exists;
  let rows = [];
  if (exists) {
    const r = await client.query(`select id, hash, created_at from ${ident(schema)}.${ident(table)} order by id`);
    rows = r.rows.map((x) => ({ id: x.id, hash: x.hash, created_at: x.created_at }));
  }
  // Same query as the migrator: order by created_at desc limit 1.
  let last = null;
  if (exists) {
    const r = await client.query(`select created_at from ${ident(schema)}.${ident(table)} order by created_at desc limit 1`);
    last = r.rows[0] ? r.rows[0].created_at : null;
  }
  const hashes = new Set(rows.map((x) => x.hash));
  const migrations = files.map((m, i) => ({
    tag: journal.entries[i].tag,
    when: m.folderMillis,
    hash: m.hash,
    pending: last === null || Number(last) < m.folderMillis,
    hash_in_ledger: hashes.has(m.hash),
  }));
  process.stdout.write(JSON.stringify({ table: `${schema}.${table}`, exists, rows, migrations }) + "\n");
} catch (e) {
  console.error(e && e.stack ? e.stack : String(e));
  code = 1;
} finally {
  await client.end().catch(() => {});
}
process.exit(code);
