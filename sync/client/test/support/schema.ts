/**
 * A small JSON Schema (draft 2020-12) checker for the keywords sync/schema/*.json use: type,
 * const, enum, pattern, minLength, maxLength, minimum, maximum, required, properties,
 * additionalProperties, items, $ref (local), anyOf, oneOf, allOf, if/then/else. Formats are
 * annotations (as in 2020-12 by default); anything else throws, so the checker cannot
 * silently pass a keyword it does not know.
 */
import { readFileSync } from 'node:fs';

export type Schema = boolean | { [keyword: string]: unknown };

const ANNOTATIONS = new Set([
  '$schema',
  '$id',
  '$defs',
  '$comment',
  'title',
  'description',
  'format',
  'examples',
  'default',
]);

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function isType(value: unknown, type: string): boolean {
  const actual = typeOf(value);
  return actual === type || (type === 'number' && actual === 'integer');
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function resolve(root: Schema, ref: string): Schema {
  if (!ref.startsWith('#/')) throw new Error(`unsupported $ref ${ref}`);
  let node: unknown = root;
  for (const part of ref.slice(2).split('/')) {
    node = (node as Record<string, unknown>)[part];
  }
  if (node === undefined) throw new Error(`unresolved $ref ${ref}`);
  return node as Schema;
}

/** The problems of `value` against `schema` (empty when valid). */
export function validate(schema: Schema, value: unknown, root: Schema = schema, at = ''): string[] {
  if (schema === true) return [];
  if (schema === false) return [`${at || '/'}: not allowed`];
  const problems: string[] = [];
  const where = at || '/';
  for (const [keyword, arg] of Object.entries(schema)) {
    switch (keyword) {
      case 'type': {
        const types = Array.isArray(arg) ? (arg as string[]) : [arg as string];
        if (!types.some((t) => isType(value, t))) problems.push(`${where}: not of type ${types.join('|')}`);
        break;
      }
      case 'const':
        if (!deepEqual(value, arg)) problems.push(`${where}: not ${JSON.stringify(arg)}`);
        break;
      case 'enum':
        if (!(arg as unknown[]).some((v) => deepEqual(v, value))) problems.push(`${where}: not in enum`);
        break;
      case 'pattern':
        if (typeof value === 'string' && !new RegExp(arg as string, 'u').test(value)) {
          problems.push(`${where}: does not match ${String(arg)}`);
        }
        break;
      case 'minLength':
        if (typeof value === 'string' && [...value].length < (arg as number)) problems.push(`${where}: too short`);
        break;
      case 'maxLength':
        if (typeof value === 'string' && [...value].length > (arg as number)) problems.push(`${where}: too long`);
        break;
      case 'minimum':
        if (typeof value === 'number' && value < (arg as number)) problems.push(`${where}: below minimum`);
        break;
      case 'maximum':
        if (typeof value === 'number' && value > (arg as number)) problems.push(`${where}: above maximum`);
        break;
      case 'required':
        if (typeOf(value) === 'object') {
          for (const key of arg as string[]) {
            if (!(key in (value as object))) problems.push(`${where}: missing ${key}`);
          }
        }
        break;
      case 'properties':
        if (typeOf(value) === 'object') {
          for (const [key, sub] of Object.entries(arg as Record<string, Schema>)) {
            if (key in (value as object)) {
              problems.push(...validate(sub, (value as Record<string, unknown>)[key], root, `${at}/${key}`));
            }
          }
        }
        break;
      case 'additionalProperties':
        if (typeOf(value) === 'object') {
          const known = new Set(Object.keys((schema['properties'] as object | undefined) ?? {}));
          for (const [key, sub] of Object.entries(value as Record<string, unknown>)) {
            if (!known.has(key)) problems.push(...validate(arg as Schema, sub, root, `${at}/${key}`));
          }
        }
        break;
      case 'items':
        if (Array.isArray(value)) {
          value.forEach((sub, i) => problems.push(...validate(arg as Schema, sub, root, `${at}/${i}`)));
        }
        break;
      case '$ref':
        problems.push(...validate(resolve(root, arg as string), value, root, at));
        break;
      case 'allOf':
        for (const sub of arg as Schema[]) problems.push(...validate(sub, value, root, at));
        break;
      case 'anyOf':
        if (!(arg as Schema[]).some((sub) => validate(sub, value, root, at).length === 0)) {
          problems.push(`${where}: matches none of anyOf`);
        }
        break;
      case 'oneOf':
        if ((arg as Schema[]).filter((sub) => validate(sub, value, root, at).length === 0).length !== 1) {
          problems.push(`${where}: does not match exactly one of oneOf`);
        }
        break;
      case 'if': {
        const holds = validate(arg as Schema, value, root, at).length === 0;
        const branch = holds ? schema['then'] : schema['else'];
        if (branch !== undefined) problems.push(...validate(branch as Schema, value, root, at));
        break;
      }
      case 'then':
      case 'else':
        break; // with 'if'
      default:
        if (!ANNOTATIONS.has(keyword)) throw new Error(`schema keyword ${keyword} is not supported here`);
    }
  }
  return problems;
}

/** sync/schema/item.v1.json, read from the package's parent directory. */
export function loadItemSchema(): Schema {
  return JSON.parse(readFileSync(new URL('../../../../schema/item.v1.json', import.meta.url), 'utf8')) as Schema;
}
