// Bundles the chat page's TypeScript (page/*.ts, on this package) into the static files the
// server embeds (crates/agent-server/static/), so `cargo run` needs no Node. The bundles are
// committed; `node bundle.mjs --check` (run by `npm test`) fails when one differs from what
// its source gives, naming the command that writes it again.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const STATIC = join(here, "..", "..", "crates", "agent-server", "static");
/** Each page module and the static file it becomes. */
const PAGES = [
  ["page/app.ts", "app.js"],
  ["page/usage.ts", "usage.js"],
  ["page/approvals.ts", "approvals.js"],
  ["page/multitask.ts", "multitask.js"],
];

async function bundle(entry, file) {
  const result = await build({
    entryPoints: [join(here, entry)],
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "es2020",
    charset: "utf8",
    legalComments: "none",
    // The client imports `ws` only where the platform has no WebSocket (Node 20), never in a
    // browser: left as an import that is never made.
    external: ["ws"],
    write: false,
    banner: {
      js: `// Generated from clients/typescript/${entry} by \`npm run bundle\` there: do not edit.`,
    },
  });
  return { path: join(STATIC, file), text: result.outputFiles[0].text };
}

const check = process.argv.includes("--check");
let stale = 0;
for (const [entry, file] of PAGES) {
  const { path, text } = await bundle(entry, file);
  if (!check) {
    writeFileSync(path, text);
    console.log(`bundled ${entry} into crates/agent-server/static/${file}`);
    continue;
  }
  let committed = "";
  try {
    committed = readFileSync(path, "utf8");
  } catch {}
  if (committed !== text) {
    stale += 1;
    console.error(
      `crates/agent-server/static/${file} is not what ${entry} gives: run \`npm run bundle\` in clients/typescript and commit it`,
    );
  }
}
if (stale > 0) process.exit(1);
if (check) console.log(`the page's bundles are up to date (${PAGES.length})`);
