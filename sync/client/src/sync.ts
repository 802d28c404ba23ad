/**
 * The part of twilio-sync's `SyncClient` and `SyncMap` this package uses, as structural types.
 *
 * The package never imports twilio-sync: a Flex plugin already has a client (Flex's
 * `manager.insightsClient`, or one the plugin made), and the emulator adapter
 * (`@flex-bridge/client/emulator`) has the same shape. test/compat checks that the real
 * `SyncClient` of twilio-sync 2.0.1 (what Flex UI 2.x bundles), 3.4.0 and 4.0.1 is assignable.
 */

/** An item as the SDK hands it over: its key and its data. */
export interface SyncMapItemLike {
  readonly key: string;
  readonly data: unknown;
}

/** One page of `getItems()`. */
export interface SyncPaginatorLike {
  readonly items: readonly SyncMapItemLike[];
  readonly hasNextPage: boolean;
  nextPage(): Promise<SyncPaginatorLike>;
}

export type MapEvent = 'itemAdded' | 'itemUpdated' | 'itemRemoved';
// The SDK's listener arguments differ between versions; the watcher reads them defensively.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Listener = (...args: any[]) => void;

export interface SyncMapLike {
  on(event: MapEvent, listener: Listener): unknown;
  removeListener?(event: MapEvent, listener: Listener): unknown;
  getItems(query?: { pageSize?: number; from?: string; order?: 'asc' | 'desc' }): Promise<SyncPaginatorLike>;
  close(): void;
}

export type OpenMode = 'open_or_create' | 'open_existing' | 'create_new';

export interface SyncClientLike {
  map(options: { id: string; mode?: OpenMode }): Promise<SyncMapLike>;
  /** 'connectionStateChanged' (a state string), 'tokenAboutToExpire', 'tokenExpired'. */
  on?(event: string, listener: Listener): unknown;
  removeListener?(event: string, listener: Listener): unknown;
  updateToken?(token: string): Promise<unknown>;
}
