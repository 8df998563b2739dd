// The declarations promise what the modules export: for each entry point in package.json's "exports", the values
// its .d.ts declares (functions, constants, classes, following `export * from`) are exactly the module's exports.
// (`npm run test:types` checks that the declarations hang together; this checks they describe the JavaScript.)

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";

import { CLIENT_DIR } from "./helpers.mjs";

const pkg = JSON.parse(readFileSync(path.join(CLIENT_DIR, "package.json"), "utf8"));

/** The value names a .d.ts exports (types and interfaces are not values), following `export * from "./x.js"`. */
function declaredValues(dtsPath) {
  const text = readFileSync(dtsPath, "utf8");
  const names = new Set([...text.matchAll(/^export\s+(?:declare\s+)?(?:function|const|let|class)\s+([A-Za-z_$][\w$]*)/gm)].map((m) => m[1]));
  for (const m of text.matchAll(/^export\s+\*\s+from\s+"(\.[^"]+)\.js";/gm)) {
    for (const n of declaredValues(path.resolve(path.dirname(dtsPath), `${m[1]}.d.ts`))) names.add(n);
  }
  return names;
}

for (const [entry, target] of Object.entries(pkg.exports)) {
  test(`"${entry}": ${target.types} declares exactly what ${target.default} exports`, async () => {
    const mod = await import(pathToFileURL(path.join(CLIENT_DIR, target.default)).href);
    const declared = [...declaredValues(path.join(CLIENT_DIR, target.types))].sort();
    assert.deepEqual(declared, Object.keys(mod).sort());
  });
}

test("the package's main types are the root entry point's", () => {
  assert.equal(pkg.types, pkg.exports["."].types);
  assert.equal(pkg.main, pkg.exports["."].default);
});
