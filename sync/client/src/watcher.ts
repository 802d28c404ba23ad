/**
 * Watch a worker's Sync map: the latest item of each reservation, in the contract's order.
 */
import { isAhead, isReservationItem, workerMapName } from './item.js';
import type { ReservationItem } from './item.js';
import type { Listener, MapEvent, SyncClientLike, SyncMapLike, SyncPaginatorLike } from './sync.js';

export type ChannelListener = (reservationSid: string, item: ReservationItem | undefined) => void;

export interface WatchOptions {
  /** Items per `getItems()` page when reading the snapshot (default 100, Sync's maximum). */
  pageSize?: number;
  /**
   * Where a fresh token comes from when the client says its token is about to expire or has
   * expired. Leave it out when something else refreshes the client (Flex does for
   * `manager.insightsClient`; `installFlexBridge` does for a client it was given).
   */
  getToken?: () => string | Promise<string>;
  /** Failures after the watcher started: a snapshot re-read, a token refresh, a listener. */
  onError?: (error: unknown) => void;
}

export interface ChannelWatcher {
  /** The latest item of a reservation, or undefined when the bridge wrote none (or it expired). */
  current(reservationSid: string): ReservationItem | undefined;
  /** Every reservation's latest item. */
  items(): ReadonlyMap<string, ReservationItem>;
  /** Stop listening and close the map. */
  close(): void;
}

interface Change {
  key: string;
  data: unknown;
}

// twilio-sync 2.x-4.x pass `{ item: SyncMapItem, isLocal }` for itemAdded/itemUpdated and
// `{ key, isLocal, previousItemData }` for itemRemoved; read both defensively.
function readItemEvent(args: unknown): Change | undefined {
  if (typeof args !== 'object' || args === null) return undefined;
  const outer = args as { item?: unknown; key?: unknown; data?: unknown };
  const item = (typeof outer.item === 'object' && outer.item !== null ? outer.item : outer) as {
    key?: unknown;
    data?: unknown;
    value?: unknown;
  };
  if (typeof item.key !== 'string') return undefined;
  return { key: item.key, data: item.data !== undefined ? item.data : item.value };
}

/** The same write seen twice (as an event and in a snapshot): not a change. */
function sameVersion(a: ReservationItem, b: ReservationItem): boolean {
  return (
    a.intent_id === b.intent_id &&
    a.phase === b.phase &&
    a.updated_at === b.updated_at &&
    a.reservation_status === b.reservation_status
  );
}

function readRemovedKey(args: unknown): string | undefined {
  if (typeof args === 'string') return args;
  if (typeof args !== 'object' || args === null) return undefined;
  const { key, item } = args as { key?: unknown; item?: { key?: unknown } };
  if (typeof key === 'string') return key;
  return typeof item?.key === 'string' ? item.key : undefined;
}

/** A watcher that is also the promise of its first snapshot read. */
export type PendingWatcher = ChannelWatcher & Promise<ChannelWatcher>;

/**
 * Open `flex-bridge.worker.<workerSid>` (open_or_create, so a plugin that loads before the
 * bridge ever wrote for its worker is still subscribed), subscribe, then read the snapshot
 * page by page. Events and snapshot both go through the contract's ordering rule, so an older
 * snapshot never overwrites a newer event, items never move backwards, and items of an unknown
 * version are ignored. After a reconnect (the client's `connectionStateChanged` back to
 * `connected`), the snapshot is read again, so nothing missed while disconnected stays missed.
 *
 * The answer is the watcher itself, usable at once, and also a promise that resolves to it
 * once the map is open, subscribed and its snapshot read (it rejects, and the watcher closes,
 * when that first read fails). `onChange(reservationSid, item)` is called for each change of a
 * reservation's latest item; `item` is undefined when it was removed (its TTL ran out: that
 * says nothing about the reservation).
 */
export function watchWorkerChannel(
  client: SyncClientLike,
  workerSid: string,
  onChange: ChannelListener,
  options: WatchOptions = {},
): PendingWatcher {
  const name = workerMapName(workerSid);
  const pageSize = options.pageSize ?? 100;
  const report = (error: unknown): void => {
    if (options.onError) options.onError(error);
    else console.error('flex-bridge: channel watcher:', error);
  };
  const items = new Map<string, ReservationItem>();
  let closed = false;
  let map: SyncMapLike | undefined;
  // Keys removed while a snapshot read is under way, so the read does not bring them back.
  let removedDuringRead: Map<string, string> | undefined;

  const notify = (key: string, item: ReservationItem | undefined): void => {
    try {
      onChange(key, item);
    } catch (error) {
      report(error);
    }
  };

  const put = (key: string, data: unknown, fromSnapshot: boolean): void => {
    if (closed || !isReservationItem(data)) return;
    if (fromSnapshot && removedDuringRead?.has(key)) {
      const removedIntent = removedDuringRead.get(key) ?? '';
      if (data.intent_id <= removedIntent || removedIntent === '') return;
    }
    const known = items.get(key);
    if (!isAhead(data, known) || (known !== undefined && sameVersion(data, known))) return;
    items.set(key, data);
    notify(key, data);
  };

  const remove = (key: string): void => {
    if (closed) return;
    const known = items.get(key);
    removedDuringRead?.set(key, known?.intent_id ?? '');
    if (known === undefined) return;
    items.delete(key);
    notify(key, undefined);
  };

  const onAdded: Listener = (args: unknown) => {
    const change = readItemEvent(args);
    if (change) put(change.key, change.data, false);
  };
  const onRemoved: Listener = (args: unknown) => {
    const key = readRemovedKey(args);
    if (key !== undefined) remove(key);
  };
  const listeners: [MapEvent, Listener][] = [
    ['itemAdded', onAdded],
    ['itemUpdated', onAdded],
    ['itemRemoved', onRemoved],
  ];

  const readSnapshot = async (opened: SyncMapLike): Promise<void> => {
    removedDuringRead = new Map();
    try {
      let page: SyncPaginatorLike = await opened.getItems({ pageSize });
      for (;;) {
        if (closed) return;
        for (const item of page.items) put(item.key, item.data, true);
        if (!page.hasNextPage) break;
        page = await page.nextPage();
      }
    } finally {
      removedDuringRead = undefined;
    }
  };

  // One read at a time; a reconnect during a read asks for one more read after it.
  let reading: Promise<void> | undefined;
  let again = false;
  const track = (read: Promise<void>): void => {
    reading = read
      .catch(report)
      .finally(() => {
        reading = undefined;
        if (again) {
          again = false;
          resync();
        }
      });
  };
  const resync = (): void => {
    if (closed || map === undefined) return;
    if (reading) {
      again = true;
      return;
    }
    track(readSnapshot(map));
  };

  const clientListeners: [string, Listener][] = [];
  let dropped = false;
  const onState: Listener = (state: unknown) => {
    // Any other state means the connection went (twilsock reports a dropped socket as
    // `connecting`, and may emit `retrying`): events may have been missed meanwhile.
    if (state === 'connected') {
      if (dropped) {
        dropped = false;
        resync();
      }
    } else {
      dropped = true;
    }
  };
  clientListeners.push(['connectionStateChanged', onState]);
  const getToken = options.getToken;
  if (getToken && typeof client.updateToken === 'function') {
    const update = client.updateToken.bind(client);
    const refresh: Listener = () => {
      void Promise.resolve()
        .then(getToken)
        .then((token) => update(token))
        .catch(report);
    };
    clientListeners.push(['tokenAboutToExpire', refresh], ['tokenExpired', refresh]);
  }

  const close = (): void => {
    if (closed) return;
    closed = true;
    for (const [event, listener] of clientListeners) client.removeListener?.(event, listener);
    if (map === undefined) return; // the map is closed when it arrives
    for (const [event, listener] of listeners) map.removeListener?.(event, listener);
    try {
      map.close();
    } catch (error) {
      report(error);
    }
  };
  const watcher: ChannelWatcher = {
    current: (reservationSid: string) => items.get(reservationSid),
    items: () => new Map(items),
    close,
  };

  const start = async (): Promise<ChannelWatcher> => {
    if (typeof client.on === 'function') {
      for (const [event, listener] of clientListeners) client.on(event, listener);
    }
    let opened: SyncMapLike;
    try {
      opened = await client.map({ id: name, mode: 'open_or_create' });
    } catch (error) {
      close();
      throw error;
    }
    map = opened;
    if (closed) {
      opened.close();
      return watcher;
    }
    for (const [event, listener] of listeners) opened.on(event, listener);
    const first = readSnapshot(opened);
    track(first);
    try {
      await first;
    } catch (error) {
      close();
      throw error;
    }
    return watcher;
  };
  const ready = start();
  ready.catch(() => undefined); // a caller that never awaits must not see an unhandled rejection
  return Object.assign(ready, watcher);
}
