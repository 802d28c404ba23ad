/**
 * The Sync item of a reservation, version 1 (sync/schema/item.v1.json), and the decisions a
 * plugin makes from it. Pure functions: no I/O, no clock.
 */
import type { ReservationItem } from './item.v1.js';
import { isObject } from './json.js';

export type { ItemError, ReservationItem } from './item.v1.js';

export type Op = ReservationItem['op'];
export type Phase = ReservationItem['phase'];
export type ReservationStatus = NonNullable<ReservationItem['reservation_status']>;

export const OPS: readonly Op[] = [
  'accept',
  'reject',
  'redirect',
  'conference',
  'dequeue',
  'call',
  'wrapup',
  'complete',
];

/** What the agent's Accept may do now, for one reservation. */
export type Decision = 'accept' | 'wait' | 'accepted' | 'gone';

const PHASES: readonly Phase[] = ['pending', 'applied', 'failed'];
/** The reservation is the agent's: it was accepted (and may be wrapping up). */
const ACCEPTED: ReadonlySet<string> = new Set(['accepted', 'wrapping']);
/** The offer ended: nothing can accept it any more. */
const ENDED: ReadonlySet<string> = new Set([
  'timeout',
  'canceled',
  'rescinded',
  'rejected',
  'completed',
]);
/**
 * The reservation's status an applied op implies, for an item whose `reservation_status` is
 * unknown (null). `call` and `redirect` accept only when asked to, so they imply nothing.
 */
const IMPLIED: Readonly<Partial<Record<string, ReservationStatus>>> = {
  accept: 'accepted',
  conference: 'accepted',
  dequeue: 'accepted',
  wrapup: 'wrapping',
  reject: 'rejected',
  complete: 'completed',
};
/** Instructions that ring the worker's leg and accept the reservation when it answers. */
const RINGING_OPS: ReadonlySet<string> = new Set(['conference', 'dequeue']);
/** Phase ranks within one intent: items never move backwards. */
const RANK: Readonly<Record<Phase, number>> = { pending: 0, failed: 1, applied: 2 };

function oneOf<T>(values: readonly T[], value: unknown): value is T {
  return (values as readonly unknown[]).includes(value);
}

/**
 * Whether `data` is an item this package can act on: version 1, with the fields a decision
 * reads. Items of another version are ignored (the contract: ignore items whose `v` you do not
 * know). The check is deliberately no stricter than that: the bridge's own tests validate every
 * item it writes against the schema, and keys added within version 1 must not make a reader
 * drop an item.
 */
export function isReservationItem(data: unknown): data is ReservationItem {
  if (!isObject(data) || data['v'] !== 1) return false;
  const status = data['reservation_status'];
  const error = data['error'];
  return (
    typeof data['intent_id'] === 'string' &&
    typeof data['op'] === 'string' &&
    oneOf(PHASES, data['phase']) &&
    (status === null || status === undefined || typeof status === 'string') &&
    (error === null || error === undefined || isObject(error))
  );
}

/**
 * The contract's ordering rule: whether `next` may replace `current` for the same reservation.
 * A newer intent (a greater `intent_id`) wins; within one intent the phase only moves forward
 * (`pending` < `failed` < `applied`), and a settled item may be rewritten in the same phase.
 */
export function isAhead(next: ReservationItem, current: ReservationItem | undefined): boolean {
  if (current === undefined) return true;
  if (next.intent_id !== current.intent_id) return next.intent_id > current.intent_id;
  return RANK[next.phase] >= RANK[current.phase];
}

/**
 * Whether a voice instruction is still ringing the agent's leg. The bridge keeps such an item
 * `pending` until the agent answers; an item that says `applied` while TaskRouter still reports
 * the reservation `pending` for a `conference` or `dequeue` means the same thing.
 */
export function isRinging(item: ReservationItem): boolean {
  return (
    RINGING_OPS.has(item.op) && item.phase === 'applied' && item.reservation_status === 'pending'
  );
}

/**
 * The accept guard's core: what the agent's Accept may do, from the reservation's item.
 *
 * - no item (or one of an unknown version): `accept`, the bridge is not involved;
 * - phase `pending`, or a voice instruction still ringing: `wait`, the bridge is acting;
 * - the reservation `accepted` or `wrapping`: `accepted`, never accept it again;
 * - timed out, canceled, rescinded, rejected or completed: `gone`;
 * - otherwise (`failed` or `applied` while the reservation is still `pending`, or its status
 *   unknown after a failure): `accept`, the agent may act on it.
 *
 * An `applied` item whose status is unknown (null) is read by its op: an applied `accept`,
 * `conference`, `dequeue` or `wrapup` means `accepted`, an applied `reject` or `complete` means
 * `gone`, and an applied `call` or `redirect` (which accept only when asked to) means `wait`
 * until the bridge learns the reservation's status.
 */
export function acceptDecision(item: ReservationItem | undefined | null): Decision {
  if (item === undefined || item === null || !isReservationItem(item)) return 'accept';
  if (item.phase === 'pending' || isRinging(item)) return 'wait';
  let status = item.reservation_status ?? null;
  if (status === null && item.phase === 'applied') {
    // TaskRouter took the change, but its outcome is unknown: read it from the op, or wait
    // for the bridge to learn it (an event or a fetch rewrites the item with the status).
    status = IMPLIED[item.op] ?? null;
    if (status === null) return 'wait';
  }
  if (status !== null && ACCEPTED.has(status)) return 'accepted';
  if (status !== null && ENDED.has(status)) return 'gone';
  return 'accept';
}

const PROGRESS: Readonly<Record<Op, string>> = {
  accept: 'accepting…',
  reject: 'rejecting…',
  redirect: 'redirecting…',
  conference: 'connecting…',
  dequeue: 'connecting…',
  call: 'calling…',
  wrapup: 'wrapping up…',
  complete: 'completing…',
};

/** What to show on the task while the bridge acts ("accepting…"), or undefined. */
export function indication(item: ReservationItem | undefined | null): string | undefined {
  if (item === undefined || item === null || !isReservationItem(item)) return undefined;
  if (item.phase === 'pending' || isRinging(item)) return PROGRESS[item.op] ?? 'working…';
  return undefined;
}

/** The agent-facing reason an offer is gone, or why the bridge's last change failed. */
export function failureMessage(item: ReservationItem | undefined | null): string | undefined {
  if (item === undefined || item === null || !isReservationItem(item)) return undefined;
  if (item.error && typeof item.error.message === 'string') return item.error.message;
  const status = item.reservation_status ?? null;
  if (status !== null && ENDED.has(status)) return `The reservation is ${status}`;
  return undefined;
}

/** The unique name of a worker's map: `flex-bridge.worker.<WorkerSid>`. */
export function workerMapName(workerSid: string): string {
  if (typeof workerSid !== 'string' || workerSid === '') {
    throw new TypeError('workerSid must be the worker\'s SID (WK…)');
  }
  return `flex-bridge.worker.${workerSid}`;
}
