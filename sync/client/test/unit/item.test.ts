import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  OPS,
  acceptDecision,
  failureMessage,
  indication,
  isAhead,
  isReservationItem,
  workerMapName,
} from '../../src/index.js';
import type { Decision, Op, Phase, ReservationItem, ReservationStatus } from '../../src/index.js';
import { WORKER_SID, intentId, item } from '../support/fixtures.js';
import { loadItemSchema, validate } from '../support/schema.js';

const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SYNC_README = new URL('../../../../README.md', import.meta.url);

const PHASES: readonly Phase[] = ['pending', 'applied', 'failed'];
const STATUSES: readonly (ReservationStatus | null)[] = [
  null,
  'pending',
  'accepted',
  'rejected',
  'timeout',
  'canceled',
  'rescinded',
  'wrapping',
  'completed',
];
const ALL_OPS: readonly Op[] = ['accept', 'reject', 'redirect', 'conference', 'dequeue', 'call', 'wrapup', 'complete'];

/**
 * The expected answer, written out from the contract (sync/README.md, "What to do on each
 * phase" and "Guard Flex's own accept"), not from the implementation:
 *
 * - phase pending: the bridge is acting, never race it: wait;
 * - the reservation accepted or wrapping: accepted;
 * - timed out, canceled, rescinded, rejected or completed: gone;
 * - failed while the reservation is still pending, or its status unknown: the agent may act again;
 * - applied with the reservation still pending: conference/dequeue still ring the agent's leg
 *   (wait; accepting would be a second call); call/redirect (and anything else) did not accept,
 *   so the agent may still accept;
 * - applied with the status unknown (null): the README's minimum rule, `bridgeOwns`, aborts every
 *   applied item whose status is not `pending` ("an accept item in phase pending or applied").
 *   So the answer must not be `accept`. Where the op pins what happened it is exact: the accept
 *   (and conference/dequeue, which accept when answered, and wrapup) took: accepted; a reject or
 *   complete took: gone. A call or redirect (which accept only when asked to) says nothing, so
 *   the answer is wait, until the bridge learns the status from an event or a fetch.
 */
function expected(op: Op, phase: Phase, status: ReservationStatus | null): Decision | readonly Decision[] {
  if (phase === 'pending') return 'wait';
  if (status === 'accepted' || status === 'wrapping') return 'accepted';
  if (status === 'timeout' || status === 'canceled' || status === 'rescinded' || status === 'rejected' || status === 'completed') {
    return 'gone';
  }
  if (phase === 'failed') return 'accept'; // status pending or null
  if (status === 'pending') return op === 'conference' || op === 'dequeue' ? 'wait' : 'accept';
  // applied, status null
  switch (op) {
    case 'accept':
    case 'conference':
    case 'dequeue':
    case 'wrapup':
      return 'accepted';
    case 'reject':
    case 'complete':
      return 'gone';
    case 'call':
    case 'redirect':
      return 'wait'; // the op does not say; wait for the bridge to learn the status
  }
}

const schema = loadItemSchema();

describe('fixtures', () => {
  test('every item the tests build is valid against sync/schema/item.v1.json', () => {
    for (const op of ALL_OPS) {
      for (const phase of PHASES) {
        for (const status of STATUSES) {
          const data = item({ op, phase, reservation_status: status });
          assert.deepEqual(validate(schema, data), [], `${op}/${phase}/${String(status)}`);
        }
      }
    }
  });

  test('the schema checker refuses what the schema refuses', () => {
    assert.notDeepEqual(validate(schema, { ...item(), extra: 1 }), []);
    assert.notDeepEqual(validate(schema, { ...item({ phase: 'applied' }), error: { code: null, message: 'x' } }), []);
    assert.notDeepEqual(validate(schema, { ...item({ phase: 'failed' }), error: null }), []);
    assert.notDeepEqual(validate(schema, { ...item(), intent_id: 'in_XYZ' }), []);
    assert.notDeepEqual(validate(schema, { ...item(), v: 2 }), []);
  });

  test('OPS lists every op of the schema, in order', () => {
    const opEnum = ((schema as Record<string, Record<string, Record<string, unknown>>>)['properties']?.['op']?.['enum'] ?? []) as unknown[];
    assert.deepEqual([...OPS], opEnum);
    assert.deepEqual([...ALL_OPS], opEnum);
  });
});

describe('acceptDecision over every op × phase × reservation_status', () => {
  for (const op of ALL_OPS) {
    for (const phase of PHASES) {
      for (const status of STATUSES) {
        const want = expected(op, phase, status);
        test(`${phase} ${op}, reservation_status ${String(status)} → ${Array.isArray(want) ? `not accept` : String(want)}`, () => {
          const got = acceptDecision(item({ op, phase, reservation_status: status }));
          if (Array.isArray(want)) assert.ok(want.includes(got), `got ${got}`);
          else assert.equal(got, want);
        });
      }
    }
  }
});

describe('acceptDecision without an item it can read', () => {
  test('no item: accept', () => {
    assert.equal(acceptDecision(undefined), 'accept');
    assert.equal(acceptDecision(null), 'accept');
  });

  test('an item of another version is ignored: accept', () => {
    for (const v of [2, 0, '1', null]) {
      const data = { ...item({ phase: 'pending' }), v } as unknown as ReservationItem;
      assert.equal(acceptDecision(data), 'accept', `v ${String(v)}`);
    }
    const accepted = { ...item({ phase: 'applied', reservation_status: 'accepted' }), v: 2 } as unknown as ReservationItem;
    assert.equal(acceptDecision(accepted), 'accept');
  });
});

describe('isAhead: the contract ordering rule', () => {
  const older = 1;
  const newer = 2;

  test('anything is ahead of nothing', () => {
    assert.equal(isAhead(item({ phase: 'failed' }), undefined), true);
  });

  test('a newer intent wins, even while it is pending over an applied older one', () => {
    const applied = item({ intentN: older, phase: 'applied', reservation_status: 'accepted' });
    const pendingWrapup = item({ intentN: newer, op: 'wrapup', phase: 'pending' });
    assert.equal(isAhead(pendingWrapup, applied), true);
    assert.equal(isAhead(applied, pendingWrapup), false);
  });

  test('intent ids compare as strings: the creation time, then the random part', () => {
    const a = item({ intent_id: intentId(5, '0000000000'), phase: 'applied' });
    const b = item({ intent_id: intentId(5, 'ffffffffff'), phase: 'pending' });
    assert.equal(isAhead(b, a), true);
    assert.equal(isAhead(a, b), false);
    // one millisecond later beats any random suffix
    const c = item({ intent_id: intentId(6, '0000000000'), phase: 'pending' });
    assert.equal(isAhead(c, b), true);
  });

  test('within one intent: pending < failed < applied', () => {
    const pending = item({ intentN: older, phase: 'pending' });
    const failed = item({ intentN: older, phase: 'failed', reservation_status: 'pending' });
    const applied = item({ intentN: older, phase: 'applied', reservation_status: 'accepted' });
    assert.equal(isAhead(failed, pending), true);
    assert.equal(isAhead(applied, pending), true);
    assert.equal(isAhead(applied, failed), true, 'failed → applied: TaskRouter showed it took after all');
    assert.equal(isAhead(pending, failed), false);
    assert.equal(isAhead(pending, applied), false);
  });

  test('an applied item never turns failed', () => {
    const applied = item({ intentN: older, phase: 'applied', reservation_status: 'accepted' });
    const failed = item({ intentN: older, phase: 'failed', reservation_status: 'timeout' });
    assert.equal(isAhead(failed, applied), false);
  });

  test('a settled item may be rewritten in the same phase with a fresher status', () => {
    const accepted = item({ intentN: older, phase: 'applied', reservation_status: 'accepted' });
    const wrapping = item({ intentN: older, phase: 'applied', reservation_status: 'wrapping', updatedAfterMs: 9_000 });
    assert.equal(isAhead(wrapping, accepted), true);
    const failedUnknown = item({ intentN: older, phase: 'failed', reservation_status: null });
    const failedTimeout = item({ intentN: older, phase: 'failed', reservation_status: 'timeout', updatedAfterMs: 9_000 });
    assert.equal(isAhead(failedTimeout, failedUnknown), true);
  });

  test('an older intent never replaces a newer one, whatever its phase', () => {
    const newerPending = item({ intentN: newer, op: 'reject', phase: 'pending' });
    for (const phase of PHASES) {
      assert.equal(isAhead(item({ intentN: older, phase }), newerPending), false, phase);
    }
  });
});

describe('indication', () => {
  test('"accepting…" for a pending accept, and the like for other pending ops', () => {
    assert.equal(indication(item({ op: 'accept', phase: 'pending' })), 'accepting…');
    assert.equal(indication(item({ op: 'reject', phase: 'pending' })), 'rejecting…');
    assert.equal(indication(item({ op: 'wrapup', phase: 'pending' })), 'wrapping up…');
    for (const op of ALL_OPS) {
      const text = indication(item({ op, phase: 'pending' }));
      assert.ok(typeof text === 'string' && text.endsWith('…'), `${op}: ${String(text)}`);
    }
  });

  test('undefined for a settled item, and for no item', () => {
    for (const op of ALL_OPS) {
      assert.equal(indication(item({ op, phase: 'applied', reservation_status: op === 'reject' ? 'rejected' : 'accepted' })), undefined, op);
      assert.equal(indication(item({ op, phase: 'failed', reservation_status: 'pending' })), undefined, op);
      assert.equal(indication(item({ op, phase: 'failed', reservation_status: 'timeout' })), undefined, op);
    }
    assert.equal(indication(undefined), undefined);
    assert.equal(indication({ ...item({ phase: 'pending' }), v: 2 } as unknown as ReservationItem), undefined);
  });

  test('a conference still ringing the agent shows progress, like the wait it causes', () => {
    const ringing = item({ op: 'conference', phase: 'applied', reservation_status: 'pending' });
    assert.equal(acceptDecision(ringing), 'wait');
    assert.equal(typeof indication(ringing), 'string');
  });
});

describe('failureMessage', () => {
  test("a failed item: the error's message, meant for the agent", () => {
    const timedOut = item({
      phase: 'failed',
      source: 'taskrouter',
      reservation_status: 'timeout',
      error: { code: 20001, message: 'The reservation timed out before it could be accepted' },
    });
    assert.equal(failureMessage(timedOut), 'The reservation timed out before it could be accepted');
    const bridgeOwn = item({
      phase: 'failed',
      reservation_status: null,
      error: { code: null, message: "The reservation's deadline passed before flex-bridge could accept it" },
    });
    assert.equal(failureMessage(bridgeOwn), "The reservation's deadline passed before flex-bridge could accept it");
  });

  test('nothing to say for a pending or accepted item, or no item', () => {
    assert.equal(failureMessage(item({ phase: 'pending' })), undefined);
    assert.equal(failureMessage(item({ phase: 'applied', reservation_status: 'accepted' })), undefined);
    assert.equal(failureMessage(undefined), undefined);
    assert.equal(failureMessage(null), undefined);
  });

  test('an ended offer without an error still gets a message naming its status', () => {
    const rescinded = item({ phase: 'applied', op: 'reject', reservation_status: 'rescinded' });
    const text = failureMessage(rescinded);
    assert.ok(typeof text === 'string' && text.includes('rescinded'), String(text));
  });
});

describe('workerMapName', () => {
  test('flex-bridge.worker.<WorkerSid>', () => {
    assert.equal(workerMapName(WORKER_SID), `flex-bridge.worker.${WORKER_SID}`);
    assert.equal(
      workerMapName('WK0123456789abcdef0123456789abcdef'),
      'flex-bridge.worker.WK0123456789abcdef0123456789abcdef',
    );
  });

  test('refuses an empty worker SID', () => {
    assert.throws(() => workerMapName(''), TypeError);
    assert.throws(() => workerMapName(undefined as unknown as string), TypeError);
  });
});

describe('isReservationItem', () => {
  test('accepts every schema-valid item', () => {
    for (const op of ALL_OPS) {
      for (const phase of PHASES) {
        for (const status of STATUSES) {
          assert.equal(isReservationItem(item({ op, phase, reservation_status: status })), true);
        }
      }
    }
  });

  test('accepts the optional enrichment key and keys added later within version 1', () => {
    const enriched = {
      ...item({ phase: 'pending' }),
      enrichment: { status: 'partial', enrichers: { crm: 'ok', tickets: 'timeout' } },
    };
    assert.deepEqual(validate(schema, enriched), []);
    assert.equal(isReservationItem(enriched), true);
    assert.equal(isReservationItem({ ...item({ phase: 'applied' }), priority_hint: 'vip' }), true);
  });

  test('refuses another version, a missing intent_id, a bad phase, and non-objects', () => {
    assert.equal(isReservationItem({ ...item(), v: 2 }), false);
    assert.equal(isReservationItem({ ...item(), v: '1' }), false);
    const { intent_id: _dropped, ...noIntent } = item();
    assert.equal(isReservationItem(noIntent), false);
    assert.equal(isReservationItem({ ...item(), phase: 'done' }), false);
    assert.equal(isReservationItem({ ...item(), phase: undefined }), false);
    for (const value of [null, undefined, 1, 'item', [item()], {}]) {
      assert.equal(isReservationItem(value), false, JSON.stringify(value));
    }
  });
});

describe('the contract files', () => {
  test('src/item.v1.ts is generated from ../schema/item.v1.json (gen-item-types --check exits 0)', () => {
    const run = spawnSync(process.execPath, ['scripts/gen-item-types.mjs', '--check'], {
      cwd: PACKAGE_ROOT,
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, `stdout: ${run.stdout}\nstderr: ${run.stderr}`);
  });

  test("every example item in sync/README.md's JSON blocks is a valid item the client reads", () => {
    const markdown = readFileSync(SYNC_README, 'utf8');
    const blocks = [...markdown.matchAll(/```json\s*\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
    assert.ok(blocks.length >= 1, 'README.md has a ```json block');
    let examples = 0;
    for (const block of blocks) {
      const parsed: unknown = JSON.parse(block);
      for (const example of Array.isArray(parsed) ? parsed : [parsed]) {
        examples += 1;
        assert.deepEqual(validate(schema, example), [], 'the example is valid against the schema');
        assert.equal(isReservationItem(example), true);
      }
    }
    assert.ok(examples >= 1);
  });
});
