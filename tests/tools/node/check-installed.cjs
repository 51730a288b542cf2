#!/usr/bin/env node
// check-installed.cjs: exits 0 only when node_modules beside this file holds
// exactly the versions package-lock.json pins (every package the lock lists
// for this platform), so scripts/test can run `npm ci` only when needed.
// Prints the first mismatch on stderr.
const fs = require("node:fs");
const path = require("node:path");

const lock = JSON.parse(fs.readFileSync(path.join(__dirname, "package-lock.json"), "utf8"));
for (const [key, entry] of Object.entries(lock.packages)) {
  if (key === "") continue;
  let installed;
  try {
    installed = JSON.parse(fs.readFileSync(path.join(__dirname, key, "package.json"), "utf8"));
  } catch {
    if (entry.optional) continue; // another platform's binary (e.g. @esbuild/darwin-arm64)
    console.error(`check-installed: ${key} is missing`);
    process.exit(1);
  }
  if (installed.version !== entry.version) {
    console.error(`check-installed: ${key} is ${installed.version}, the lock pins ${entry.version}`);
    process.exit(1);
  }
}
