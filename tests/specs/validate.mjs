// Validates an AsyncAPI document (a file, or standard input) with the AsyncAPI Initiative's own parser.
// Prints every diagnostic; exits 1 when any is an error (severity 0), 0 otherwise.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const text = readFileSync(process.argv[2] || 0, "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const names = ["error", "warning", "info", "hint"];
for (const d of diagnostics) console.log(`${names[d.severity]} ${d.code} ${d.path.join("/")}: ${d.message}`);
const errors = diagnostics.filter((d) => d.severity === 0);
if (!document || errors.length) {
  console.log(`invalid: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`valid: AsyncAPI ${document.version()}, ${document.allMessages().length} messages`);
