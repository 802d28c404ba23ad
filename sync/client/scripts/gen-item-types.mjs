// Generates src/item.v1.ts from ../schema/item.v1.json, so the item type cannot drift from the
// contract. `npm run gen:types` writes it; `--check` (run by the unit tests) fails on a difference.
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const SCHEMA = here('../../schema/item.v1.json');
const TARGET = here('../src/item.v1.ts');

export async function generate() {
  const schema = JSON.parse(await readFile(SCHEMA, 'utf8'));
  // Names for the generated types (titles are annotations; the contract file stays as it is).
  // The if/then rules (`error` is null unless the phase is `failed`) are not expressible as
  // one TypeScript object type; the unit tests check them against the schema instead.
  schema.title = 'ReservationItem';
  schema.$defs.error.title = 'ItemError';
  delete schema.allOf;
  const body = await compile(schema, 'ReservationItem', {
    bannerComment:
      '/* Generated from sync/schema/item.v1.json by scripts/gen-item-types.mjs: do not edit. */',
    additionalProperties: false,
    strictIndexSignatures: true,
    unreachableDefinitions: false,
    format: true,
    style: { singleQuote: true },
  });
  return body;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = await generate();
  if (process.argv.includes('--check')) {
    const current = await readFile(TARGET, 'utf8').catch(() => '');
    if (current !== text) {
      console.error('src/item.v1.ts differs from sync/schema/item.v1.json: run `npm run gen:types`');
      process.exit(1);
    }
    console.log('src/item.v1.ts matches sync/schema/item.v1.json');
  } else {
    await writeFile(TARGET, text);
    console.log('wrote src/item.v1.ts');
  }
}
