/* Generated from sync/schema/item.v1.json by scripts/gen-item-types.mjs: do not edit. */

/**
 * The data of one item in a worker's Sync map `flex-bridge.worker.<WorkerSid>`. The item key is the ReservationSid. The bridge writes the item with phase `pending` before it sends any REST change for the reservation, then settles it to `applied` or `failed` with TaskRouter's answer. A write never moves an item backwards: a newer intent for the same reservation replaces an older one (intent_ids sort by creation), and within one intent the phase only goes pending -> applied | failed. Facts a schema cannot check: `reservation_sid` equals the item key, `worker_sid` is the worker the map is named after, and `requested_at` <= `updated_at`.
 */
export interface ReservationItem {
  /**
   * Version of this item format. A change that breaks readers gets a new version and a new schema file; a reader should ignore items whose version it does not know.
   */
  v: 1;
  /**
   * The bridge's id for the requested change: `in_`, 12 hex digits of the creation time in milliseconds since the epoch, then 10 random hex digits. Plain string order is creation order, so a greater intent_id is a newer intent. `GET /flex/intents/<intent_id>` returns the intent.
   */
  intent_id: string;
  /**
   * The reservation operation the intent performs.
   */
  op: 'accept' | 'reject' | 'redirect' | 'conference' | 'dequeue' | 'call' | 'wrapup' | 'complete';
  /**
   * `pending`: announced, the bridge is acting or about to act; do not act on this reservation. `applied`: TaskRouter took the change. `failed`: it did not, or can no longer happen; see `error`.
   */
  phase: 'pending' | 'applied' | 'failed';
  /**
   * The TaskRouter Task the reservation belongs to.
   */
  task_sid: string;
  /**
   * The TaskRouter Reservation; always equal to the item key.
   */
  reservation_sid: string;
  /**
   * The TaskRouter Worker the reservation is for; always the worker the map is named after.
   */
  worker_sid: string;
  /**
   * Who asked for the change: `policy` (the bridge's assignment rules), `plugin` (a Flex plugin through the /flex API), `timeout` (the bridge's reservation-timeout policy), `recovery` (the bridge's start-up or periodic recovery), `taskrouter` (nobody asked the bridge: TaskRouter changed the reservation itself, e.g. a timeout, a cancel, or an accept in Flex; `reservation_status` says what happened).
   */
  source: 'policy' | 'plugin' | 'timeout' | 'recovery' | 'taskrouter';
  /**
   * When the intent was created, UTC, milliseconds, e.g. `2024-05-01T12:34:56.789Z`.
   */
  requested_at: string;
  /**
   * When the bridge wrote this version of the item, UTC, milliseconds.
   */
  updated_at: string;
  /**
   * The reservation's status as TaskRouter last reported it to the bridge (normally the status after the change), or null while it is not known, e.g. in phase `pending`, or after a failure where TaskRouter could not be reached.
   */
  reservation_status:
    null | 'pending' | 'accepted' | 'rejected' | 'timeout' | 'canceled' | 'rescinded' | 'wrapping' | 'completed';
  /**
   * Why the change failed: null unless phase is `failed`, then an object.
   */
  error: null | ItemError;
  /**
   * Optional. Present when the bridge ran the CRM enrichers for this intent (rules with before_accept). status: ok (every enricher added data), partial (some did), failed (none did, or the write failed), skipped (no enrichers). enrichers maps each enricher's name to ok, empty (nothing to add), timeout or error. A plugin may show 'customer data unavailable' when status is failed or partial.
   */
  enrichment?: {
    status: 'ok' | 'partial' | 'failed' | 'skipped';
    enrichers: {
      [k: string]: 'ok' | 'empty' | 'timeout' | 'error' | undefined;
    };
    message?: string;
  };
}
/**
 * Why a change failed. `code` is Twilio's error code when TaskRouter refused (e.g. 20001, 40114) or null when the failure is the bridge's own (e.g. the reservation's deadline passed); `message` is human-readable and safe to show to the agent.
 */
export interface ItemError {
  code: number | null;
  message: string;
}
