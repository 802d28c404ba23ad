/**
 * Realistic, schema-valid items of sync/schema/item.v1.json, and the SIDs they name.
 * Every item `item()` builds validates against the schema (test/unit/item.test.ts checks it).
 */
import type { Op, Phase, ReservationItem, ReservationStatus } from '../../src/index.js';

export const WORKER_SID = 'WK00112233445566778899aabbccddeeff';
export const OTHER_WORKER_SID = 'WKffeeddccbbaa99887766554433221100';
export const TASK_SID = 'WT0123456789abcdef0123456789abcdef';
export const RESERVATION_SID = 'WRfedcba9876543210fedcba9876543210';

const hex32 = (n: number): string => n.toString(16).padStart(32, '0');
/** The n-th reservation SID (`WR` + 32 hex). */
export const reservationSid = (n: number): string => `WR${hex32(0xabc0000 + n)}`;
/** The n-th task SID (`WT` + 32 hex). */
export const taskSid = (n: number): string => `WT${hex32(0xdef0000 + n)}`;

const BASE_MS = 0x018f34269c95; // 2024-05-01T12:34:56.789Z
/**
 * An intent id: `in_` + 12 hex digits of the creation time in ms + 10 random-looking ones.
 * A greater `n` is a later creation time, so a newer intent.
 */
export const intentId = (n: number, random = 'a3f09d12e4'): string =>
  `in_${(BASE_MS + n).toString(16).padStart(12, '0')}${random}`;

const iso = (ms: number): string => new Date(ms).toISOString();

export interface ItemOverrides {
  intentN?: number;
  intent_id?: string;
  op?: Op;
  phase?: Phase;
  task_sid?: string;
  reservation_sid?: string;
  worker_sid?: string;
  source?: ReservationItem['source'];
  reservation_status?: ReservationStatus | null;
  error?: ReservationItem['error'];
  updatedAfterMs?: number;
}

/**
 * A schema-valid item. `error` defaults to null unless the phase is `failed`, then to an
 * error whose message names the status (the schema's if/then rules).
 */
export function item(overrides: ItemOverrides = {}): ReservationItem {
  const n = overrides.intentN ?? 0;
  const phase = overrides.phase ?? 'pending';
  const status =
    overrides.reservation_status !== undefined
      ? overrides.reservation_status
      : phase === 'pending'
        ? null
        : phase === 'applied'
          ? 'accepted'
          : 'pending';
  const error =
    overrides.error !== undefined
      ? overrides.error
      : phase === 'failed'
        ? {
            code: status === 'timeout' ? 20001 : null,
            message:
              status === null
                ? 'flex-bridge could not reach TaskRouter before the reservation\'s deadline'
                : `The reservation could not be changed (it is ${status})`,
          }
        : null;
  const requested = BASE_MS + n;
  return {
    v: 1,
    intent_id: overrides.intent_id ?? intentId(n),
    op: overrides.op ?? 'accept',
    phase,
    task_sid: overrides.task_sid ?? TASK_SID,
    reservation_sid: overrides.reservation_sid ?? RESERVATION_SID,
    worker_sid: overrides.worker_sid ?? WORKER_SID,
    source: overrides.source ?? 'plugin',
    requested_at: iso(requested),
    updated_at: iso(requested + (overrides.updatedAfterMs ?? (phase === 'pending' ? 0 : 850))),
    reservation_status: status,
    error,
  };
}
