// Prints the size of the browser bundle, raw and gzipped, and fails above the 5 KB budget.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const BUDGET = 5 * 1024;
const bundle = readFileSync(new URL("../dist/disengage.min.js", import.meta.url));
const gzipped = gzipSync(bundle, { level: 9 }).length;
console.log(`dist/disengage.min.js: ${bundle.length} bytes, ${gzipped} gzipped (budget ${BUDGET})`);
if (gzipped > BUDGET) process.exit(1);
