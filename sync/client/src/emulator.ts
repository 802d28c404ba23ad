/**
 * `EmulatorSyncClient`: a stand-in for twilio-sync's `SyncClient`, backed by the SDK surface
 * of `flex-bridge emulator` (docs/emulator.md, "The SDK surface"), for local development and
 * tests without Twilio.
 *
 * It has the shape this package needs (`SyncClientLike`): `map({ id, mode })` opens a Map
 * over HTTP and subscribes to it over the emulator's WebSocket before it resolves, so
 * "subscribe, then read the snapshot" holds; the Map's events are shaped like twilio-sync's;
 * the client reports `connectionStateChanged`, `tokenAboutToExpire` and `tokenExpired`, takes
 * `updateToken()`, and reconnects on its own (with a capped backoff) after an unexpected close,
 * re-subscribing every open Map before it says `connected` again.
 *
 * Connection states follow twilio-sync's (twilsock's) public ones: `connecting` (also while
 * it waits to retry after a drop), `connected`, `disconnecting`, `disconnected` (after
 * `shutdown()`), `denied` (the token was refused or expired: nothing happens until
 * `updateToken()`).
 *
 * No runtime dependencies: it uses `fetch` and a `WebSocket` constructor (the browser's, or
 * one passed in).
 */
import { isObject, readJson } from './json.js';
import type { OpenMode } from './sync.js';

/** twilio-sync's public connection states. */
export type ConnectionState = 'connecting' | 'connected' | 'disconnecting' | 'disconnected' | 'denied';

/** The part of a browser `WebSocket` the client uses (the `ws` package's fits too). */
export interface WebSocketLike {
  readonly readyState: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onopen: ((event: any) => void) | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onmessage: ((event: any) => void) | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onclose: ((event: any) => void) | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructorLike = new (url: string) => WebSocketLike;

export interface EmulatorSyncClientOptions {
  /** The emulator's base URL, e.g. `http://127.0.0.1:8700`. */
  baseUrl: string;
  /** A WebSocket constructor (default `globalThis.WebSocket`). */
  WebSocket?: WebSocketConstructorLike;
  fetch?: typeof fetch;
  /** First delay before a reconnect (default 250 ms); it doubles up to `maxReconnectDelayMs`. */
  minReconnectDelayMs?: number;
  /** Longest delay between reconnects (default 5000 ms). */
  maxReconnectDelayMs?: number;
  /** A connection that is not authenticated within this long is dropped and retried (default 10 s). */
  handshakeTimeoutMs?: number;
}

export interface EmulatorMapOptions {
  /** The Map's unique name or SID. */
  id: string;
  /** Default `open_or_create`. */
  mode?: OpenMode;
}

export interface EmulatorItemsQuery {
  /** Items per page, 1 to 100 (default 50). */
  pageSize?: number;
  /** The first key to list (inclusive; for `desc`, the last). Applied by the client. */
  from?: string;
  /** Key order (default `asc`). `desc` is applied by the client. */
  order?: 'asc' | 'desc';
}

/** An error from the emulator, in Twilio's shape (`code`, `status`, `message`). */
export class EmulatorSyncError extends Error {
  override name = 'EmulatorSyncError';
  /** The HTTP status, or 0 when there was no answer (network failure, connection lost). */
  readonly status: number;
  /** Twilio's error code, or null. */
  readonly code: number | null;
  readonly moreInfo: string | null;

  constructor(message: string, status: number, code: number | null = null, moreInfo: string | null = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.moreInfo = moreInfo;
  }
}

/** One item of a Map, like twilio-sync's `SyncMapItem`. */
export interface EmulatorSyncMapItem {
  readonly key: string;
  readonly data: unknown;
  readonly revision: string;
  readonly dateUpdated: Date | null;
  readonly dateExpires: string | null;
}

/** `itemAdded` / `itemUpdated` arguments. */
export interface EmulatorItemEvent {
  item: EmulatorSyncMapItem;
  isLocal: false;
}

/** `itemRemoved` arguments. */
export interface EmulatorItemRemovedEvent {
  key: string;
  isLocal: false;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyListener = (...args: any[]) => void;

const OPEN = 1;
const CLOSE_DENIED = 4001;
const MODES: readonly OpenMode[] = ['open_or_create', 'open_existing', 'create_new'];
const ITEM_EVENTS = new Set(['itemAdded', 'itemUpdated', 'itemRemoved']);

function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function toDate(value: unknown): Date | null {
  if (typeof value !== 'string') return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function toItem(raw: Record<string, unknown>): EmulatorSyncMapItem {
  return {
    key: String(raw['key']),
    data: raw['data'],
    revision: raw['revision'] === undefined || raw['revision'] === null ? '' : String(raw['revision']),
    dateUpdated: toDate(raw['date_updated']),
    dateExpires: str(raw['date_expires']),
  };
}

/** Seconds until `expires` (epoch seconds, or an ISO date), or undefined. */
function secondsUntil(expires: unknown): number | undefined {
  let at: number | undefined;
  if (typeof expires === 'number') at = expires * 1000;
  else if (typeof expires === 'string') {
    const parsed = Date.parse(expires);
    if (!Number.isNaN(parsed)) at = parsed;
  }
  return at === undefined ? undefined : Math.max(0, Math.round((at - Date.now()) / 1000));
}

class Emitter {
  private readonly listeners = new Map<string, AnyListener[]>();

  on(event: string, listener: AnyListener): void {
    const list = this.listeners.get(event) ?? [];
    list.push(listener);
    this.listeners.set(event, list);
  }

  off(event: string, listener: AnyListener): void {
    const list = this.listeners.get(event);
    if (!list) return;
    const at = list.indexOf(listener);
    if (at >= 0) list.splice(at, 1);
    if (list.length === 0) this.listeners.delete(event);
  }

  clear(event?: string): void {
    if (event === undefined) this.listeners.clear();
    else this.listeners.delete(event);
  }

  count(event: string): number {
    return this.listeners.get(event)?.length ?? 0;
  }

  emit(event: string, ...args: unknown[]): void {
    for (const listener of [...(this.listeners.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`EmulatorSyncClient: a '${event}' listener threw`, error);
      }
    }
  }
}

/** The listener methods twilio-sync's objects have, over one Emitter. */
class EventSource {
  protected readonly events = new Emitter();

  on(event: string, listener: AnyListener): this {
    this.events.on(event, listener);
    return this;
  }

  once(event: string, listener: AnyListener): this {
    const wrapped: AnyListener = (...args) => {
      this.events.off(event, wrapped);
      listener(...args);
    };
    this.events.on(event, wrapped);
    return this;
  }

  removeListener(event: string, listener: AnyListener): this {
    this.events.off(event, listener);
    return this;
  }

  off(event: string, listener: AnyListener): this {
    return this.removeListener(event, listener);
  }

  removeAllListeners(event?: string): this {
    this.events.clear(event);
    return this;
  }
}

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

/** One Map subscription, shared by every open handle of that Map. */
interface Subscription {
  readonly sid: string;
  readonly handles: Set<EmulatorSyncMap>;
  /** new: to send; requested: sent, no ack yet; subscribed: acknowledged on this connection. */
  status: 'new' | 'requested' | 'subscribed';
  /** Acknowledged at least once: its handles are out, and must not miss events. */
  established: boolean;
  /** map() calls waiting for the first acknowledgement. */
  waiters: Waiter<void>[];
}

interface TokenWaiter extends Waiter<void> {
  readonly token: string;
}

/** A page of items, like twilio-sync's `Paginator`. */
export class EmulatorSyncPaginator {
  readonly items: EmulatorSyncMapItem[];
  private readonly next: (() => Promise<EmulatorSyncPaginator>) | undefined;

  /** @internal */
  constructor(items: EmulatorSyncMapItem[], next: (() => Promise<EmulatorSyncPaginator>) | undefined) {
    this.items = items;
    this.next = next;
  }

  get hasNextPage(): boolean {
    return this.next !== undefined;
  }

  get hasPrevPage(): boolean {
    return false;
  }

  nextPage(): Promise<EmulatorSyncPaginator> {
    if (!this.next) return Promise.reject(new EmulatorSyncError('There is no next page', 400, 20001));
    return this.next();
  }

  prevPage(): Promise<EmulatorSyncPaginator> {
    return Promise.reject(new EmulatorSyncError('The emulator pages forward only', 400, 20001));
  }
}

/** An open Map: its item events, and its items page by page. */
export class EmulatorSyncMap extends EventSource {
  readonly sid: string;
  readonly uniqueName: string | null;
  readonly revision: string;
  readonly dateExpires: string | null;
  private closed = false;

  /** @internal */
  constructor(
    private readonly client: EmulatorSyncClient,
    descriptor: Record<string, unknown>,
  ) {
    super();
    this.sid = String(descriptor['sid']);
    this.uniqueName = str(descriptor['unique_name']);
    this.revision = descriptor['revision'] === undefined ? '' : String(descriptor['revision']);
    this.dateExpires = str(descriptor['date_expires']);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // on/once/off/removeListener/removeAllListeners (EventSource): 'itemAdded' and 'itemUpdated'
  // get `{ item, isLocal: false }`; 'itemRemoved' gets `{ key, isLocal: false }`.

  /** A page of the Map's items, in key order. */
  getItems(query: EmulatorItemsQuery = {}): Promise<EmulatorSyncPaginator> {
    if (this.closed) return Promise.reject(new EmulatorSyncError('The map is closed', 400, 20001));
    return this.client._items(this.sid, query);
  }

  /** Stop receiving events; the subscription ends with the last open handle of the Map. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.events.clear();
    this.client._release(this);
  }

  /** @internal */
  _dispatch(event: string, args: EmulatorItemEvent | EmulatorItemRemovedEvent): void {
    if (!this.closed) this.events.emit(event, args);
  }
}

/**
 * twilio-sync's `SyncClient`, as far as `@flex-bridge/client` uses it, against the emulator.
 *
 * ```js
 * const client = new EmulatorSyncClient(token, { baseUrl: 'http://127.0.0.1:8700' });
 * const map = await client.map({ id: 'flex-bridge.worker.WK…', mode: 'open_or_create' });
 * map.on('itemUpdated', ({ item }) => console.log(item.key, item.data));
 * ```
 */
export class EmulatorSyncClient extends EventSource {
  private token: string;
  private readonly baseUrl: string;
  private readonly wsUrl: string;
  private readonly WebSocketImpl: WebSocketConstructorLike | undefined;
  private readonly doFetch: typeof fetch;
  private readonly minDelay: number;
  private readonly maxDelay: number;
  private readonly handshakeTimeout: number;
  private state: ConnectionState = 'connecting';
  private socket: WebSocketLike | undefined;
  /** The token the current socket sent in its `auth`. */
  private socketAuthToken: string | undefined;
  /** The token the current connection is known to hold (after `connected` or `tokenUpdated`). */
  private socketToken: string | undefined;
  private authenticated = false;
  /** Tokens sent in `updateToken` messages, awaiting `tokenUpdated` (or an error), in order. */
  private sentUpdates: string[] = [];
  /** The emulator refused an updateToken on this connection (it closes it with 4001 next). */
  private updateRefused = false;
  private tokenWaiters: TokenWaiter[] = [];
  private readonly subscriptions = new Map<string, Subscription>();
  private attempts = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;

  constructor(token: string, options: EmulatorSyncClientOptions) {
    super();
    if (typeof token !== 'string' || token === '') throw new TypeError('EmulatorSyncClient: token must be a non-empty string');
    const base = String(options?.baseUrl ?? '').replace(/\/+$/, '');
    if (!/^https?:\/\//.test(base)) {
      throw new TypeError(`EmulatorSyncClient: baseUrl must be an http(s) URL; got ${JSON.stringify(options?.baseUrl)}`);
    }
    this.token = token;
    this.baseUrl = base;
    this.wsUrl = `${base.replace(/^http/, 'ws')}/sdk/sync/v1/ws`;
    this.WebSocketImpl =
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructorLike }).WebSocket;
    const given = options.fetch;
    this.doFetch = given ?? ((input, init) => globalThis.fetch(input, init));
    this.minDelay = Math.max(0, options.minReconnectDelayMs ?? 250);
    this.maxDelay = Math.max(this.minDelay, options.maxReconnectDelayMs ?? 5000);
    this.handshakeTimeout = options.handshakeTimeoutMs ?? 10_000;
    if (!this.WebSocketImpl) {
      throw new TypeError('EmulatorSyncClient: no WebSocket here; pass options.WebSocket');
    }
    this.connect();
  }

  /** 'connecting' | 'connected' | 'disconnecting' | 'disconnected' | 'denied'. */
  get connectionState(): ConnectionState {
    return this.state;
  }

  // on/once/off/removeListener/removeAllListeners (EventSource): 'connectionStateChanged' (the
  // new state), 'tokenAboutToExpire' (seconds left, when known), 'tokenExpired', 'error' (an
  // error the emulator reported that nothing was waiting for).

  /**
   * Open a Map (by unique name or SID) and subscribe to it. Resolves once the emulator has
   * acknowledged the subscription, so every change after that arrives as an event.
   */
  async map(options: string | EmulatorMapOptions): Promise<EmulatorSyncMap> {
    const { id, mode = 'open_or_create' } = typeof options === 'string' ? { id: options } : options ?? { id: '' };
    if (typeof id !== 'string' || id === '') throw new TypeError('EmulatorSyncClient.map: id must be a non-empty string');
    if (!MODES.includes(mode)) throw new TypeError(`EmulatorSyncClient.map: unknown mode ${JSON.stringify(mode)}`);
    this.assertOpen();
    const descriptor = await this.request('POST', '/sdk/sync/v1/Maps', { id, mode });
    if (!isObject(descriptor) || typeof descriptor['sid'] !== 'string') {
      throw new EmulatorSyncError('The emulator answered without a Map SID', 502);
    }
    this.assertOpen();
    const sid = descriptor['sid'];
    let sub = this.subscriptions.get(sid);
    if (!sub) {
      sub = { sid, handles: new Set(), status: 'new', established: false, waiters: [] };
      this.subscriptions.set(sid, sub);
    }
    const handle = new EmulatorSyncMap(this, descriptor);
    sub.handles.add(handle);
    if (sub.status === 'subscribed') return handle;
    if (this.state === 'denied') {
      handle.close();
      throw this.deniedError();
    }
    const ready = new Promise<void>((resolve, reject) => sub.waiters.push({ resolve, reject }));
    this.sendSubscribe(sub);
    try {
      await ready;
    } catch (error) {
      handle.close();
      throw error;
    }
    return handle;
  }

  /**
   * Replace the token. Connected: the emulator takes it on the open connection. Denied (the
   * token expired or was refused) or waiting to retry: it connects again at once with it,
   * re-subscribes every open Map, then says `connected`. Resolves once the connection holds
   * this token; rejects if the emulator refuses it.
   */
  updateToken(token: string): Promise<void> {
    if (typeof token !== 'string' || token === '') {
      return Promise.reject(new TypeError('EmulatorSyncClient.updateToken: token must be a non-empty string'));
    }
    if (this.closed) return Promise.reject(this.shutDownError());
    this.token = token;
    const done = new Promise<void>((resolve, reject) => this.tokenWaiters.push({ token, resolve, reject }));
    if (this.socket && this.authenticated && this.socket.readyState === OPEN) {
      this.sendUpdate(token);
    } else if (!this.socket) {
      // Denied, or between attempts: try now, with the new token.
      this.clearRetry();
      this.connect();
    }
    // Otherwise a handshake is under way: on `connected` the newer token is sent.
    return done;
  }

  /** Close the connection and every Map; pending `map()` and `updateToken()` calls reject. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.setState('disconnecting');
    this.clearRetry();
    this.clearHandshake();
    const error = this.shutDownError();
    for (const sub of this.subscriptions.values()) {
      for (const waiter of sub.waiters.splice(0)) waiter.reject(error);
    }
    for (const waiter of this.tokenWaiters.splice(0)) waiter.reject(error);
    this.subscriptions.clear();
    const socket = this.socket;
    this.dropSocket();
    if (socket) {
      try {
        socket.close(1000, 'shutdown');
      } catch {
        // already closed
      }
    }
    this.setState('disconnected');
  }

  // ------------------------------------------------------------------ used by EmulatorSyncMap
  /** @internal */
  async _items(sid: string, query: EmulatorItemsQuery): Promise<EmulatorSyncPaginator> {
    const pageSize = query.pageSize ?? 50;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 100) {
      throw new RangeError('getItems: pageSize must be an integer from 1 to 100');
    }
    const order = query.order ?? 'asc';
    if (query.from === undefined && order === 'asc') return this.serverPage(sid, pageSize, undefined);
    // The emulator pages forward in key order only: read everything, then page here.
    const all: EmulatorSyncMapItem[] = [];
    let token: string | undefined;
    do {
      const page = await this.fetchPage(sid, 100, token);
      all.push(...page.items);
      token = page.next;
    } while (token !== undefined);
    if (order === 'desc') all.reverse();
    const from = query.from;
    const chosen =
      from === undefined ? all : all.filter((item) => (order === 'asc' ? item.key >= from : item.key <= from));
    const local = (offset: number): EmulatorSyncPaginator => {
      const end = offset + pageSize;
      return new EmulatorSyncPaginator(
        chosen.slice(offset, end),
        end < chosen.length ? () => Promise.resolve(local(end)) : undefined,
      );
    };
    return local(0);
  }

  /** @internal */
  _release(handle: EmulatorSyncMap): void {
    const sub = this.subscriptions.get(handle.sid);
    if (!sub || !sub.handles.delete(handle) || sub.handles.size > 0) return;
    this.subscriptions.delete(sub.sid);
    for (const waiter of sub.waiters.splice(0)) waiter.reject(new EmulatorSyncError('The map was closed', 0));
    if (sub.status !== 'new' && this.socket && this.authenticated) {
      this.send({ type: 'unsubscribe', map_sid: sub.sid });
    }
  }

  // ------------------------------------------------------------------------------- HTTP
  private async serverPage(sid: string, pageSize: number, pageToken: string | undefined): Promise<EmulatorSyncPaginator> {
    const page = await this.fetchPage(sid, pageSize, pageToken);
    const next = page.next;
    return new EmulatorSyncPaginator(
      page.items,
      next === undefined ? undefined : () => this.serverPage(sid, pageSize, next),
    );
  }

  private async fetchPage(
    sid: string,
    pageSize: number,
    pageToken: string | undefined,
  ): Promise<{ items: EmulatorSyncMapItem[]; next: string | undefined }> {
    let path = `/sdk/sync/v1/Maps/${encodeURIComponent(sid)}/Items?pageSize=${pageSize}`;
    if (pageToken !== undefined) path += `&pageToken=${encodeURIComponent(pageToken)}`;
    const body = await this.request('GET', path, undefined);
    const rows = isObject(body) && Array.isArray(body['items']) ? body['items'] : [];
    const items = rows.filter(isObject).map(toItem);
    const next = isObject(body) && typeof body['next_page_token'] === 'string' ? body['next_page_token'] : undefined;
    return { items, next };
  }

  private async request(method: string, path: string, body: unknown): Promise<unknown> {
    const headers: Record<string, string> = { Accept: 'application/json', Authorization: `Bearer ${this.token}` };
    const init: RequestInit = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response: Response;
    try {
      response = await this.doFetch(this.baseUrl + path, init);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new EmulatorSyncError(`The emulator could not be reached: ${reason}`, 0);
    }
    const parsed = await readJson(response);
    if (response.ok) return parsed;
    const err = isObject(parsed) ? parsed : {};
    throw new EmulatorSyncError(
      str(err['message']) ?? `The emulator answered HTTP ${response.status}`,
      response.status,
      typeof err['code'] === 'number' ? err['code'] : null,
      str(err['more_info']),
    );
  }

  // -------------------------------------------------------------------------- WebSocket
  private connect(): void {
    if (this.closed || this.socket) return;
    this.setState('connecting');
    const Impl = this.WebSocketImpl as WebSocketConstructorLike;
    let socket: WebSocketLike;
    try {
      socket = new Impl(this.wsUrl);
    } catch (error) {
      this.events.emit('error', error);
      this.scheduleRetry();
      return;
    }
    const token = this.token;
    this.socket = socket;
    this.socketAuthToken = token;
    this.socketToken = undefined;
    this.authenticated = false;
    this.sentUpdates = [];
    this.clearHandshake();
    this.handshakeTimer = setTimeout(() => {
      if (this.socket !== socket || this.authenticated) return;
      this.lost(socket, 4000, 'no answer to auth');
    }, this.handshakeTimeout);
    socket.onopen = () => {
      if (this.socket === socket) this.send({ type: 'auth', token });
    };
    socket.onmessage = (event: { data?: unknown }) => {
      if (this.socket !== socket || typeof event?.data !== 'string') return;
      let message: unknown;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (isObject(message)) this.onMessage(message);
    };
    socket.onerror = () => {
      // A close event follows.
    };
    socket.onclose = (event: { code?: unknown; reason?: unknown }) => {
      if (this.socket !== socket) return;
      this.lost(socket, typeof event?.code === 'number' ? event.code : 1006, str(event?.reason) ?? '');
    };
  }

  private onMessage(message: Record<string, unknown>): void {
    switch (message['type']) {
      case 'connected':
        this.onConnected();
        return;
      case 'subscribed': {
        const sub = this.subscriptions.get(String(message['map_sid']));
        if (!sub || sub.status !== 'requested') return;
        sub.status = 'subscribed';
        sub.established = true;
        for (const waiter of sub.waiters.splice(0)) waiter.resolve();
        this.maybeConnected();
        return;
      }
      case 'itemAdded':
      case 'itemUpdated': {
        const sub = this.subscriptions.get(String(message['map_sid']));
        if (!sub || sub.status === 'new') return;
        const args: EmulatorItemEvent = { item: toItem(message), isLocal: false };
        for (const handle of [...sub.handles]) handle._dispatch(String(message['type']), args);
        return;
      }
      case 'itemRemoved': {
        const sub = this.subscriptions.get(String(message['map_sid']));
        if (!sub || sub.status === 'new') return;
        const args: EmulatorItemRemovedEvent = { key: String(message['key']), isLocal: false };
        for (const handle of [...sub.handles]) handle._dispatch('itemRemoved', args);
        return;
      }
      case 'tokenUpdated': {
        const token = this.sentUpdates.shift();
        if (token !== undefined) {
          this.socketToken = token;
          this.settleTokens(token, undefined);
        }
        return;
      }
      case 'tokenAboutToExpire':
        this.events.emit('tokenAboutToExpire', secondsUntil(message['expires']));
        return;
      case 'tokenExpired':
        this.events.emit('tokenExpired');
        return;
      case 'error':
        this.onError(message);
        return;
      default:
        return;
    }
  }

  private onConnected(): void {
    this.authenticated = true;
    this.clearHandshake();
    this.socketToken = this.socketAuthToken;
    if (this.token !== this.socketToken) this.sendUpdate(this.token);
    for (const sub of this.subscriptions.values()) {
      sub.status = 'new';
      this.sendSubscribe(sub);
    }
    this.maybeConnected();
  }

  /** Connected once authenticated and every open Map is subscribed again. */
  private maybeConnected(): void {
    if (!this.authenticated || this.state === 'connected' || this.closed) return;
    // Maps still waiting for their first ack (a map() in progress) do not hold the state back:
    // only those whose handles are already out, and so must not miss events, do.
    for (const sub of this.subscriptions.values()) {
      if (sub.established && sub.status !== 'subscribed') return;
    }
    this.attempts = 0;
    this.setState('connected');
    // updateToken() calls that led to this connection resolve now that it is whole again.
    if (this.socketToken !== undefined) this.settleTokens(this.socketToken, undefined);
  }

  private onError(message: Record<string, unknown>): void {
    const code = typeof message['code'] === 'number' ? message['code'] : null;
    const text = str(message['message']) ?? 'The emulator reported an error';
    const status = typeof message['status'] === 'number' ? message['status'] : 400;
    const error = new EmulatorSyncError(text, status, code);
    const mapSid = str(message['map_sid']);
    if (mapSid !== null) {
      const sub = this.subscriptions.get(mapSid);
      if (sub && sub.status === 'requested') {
        // The subscription was refused (e.g. the Map is gone): its handles get no events.
        this.subscriptions.delete(mapSid);
        for (const waiter of sub.waiters.splice(0)) waiter.reject(error);
        for (const handle of [...sub.handles]) handle.close();
        this.events.emit('error', error);
        this.maybeConnected();
        return;
      }
    }
    if (!this.authenticated) {
      // The auth was refused; the close (4001) follows.
      const token = this.socketAuthToken;
      if (token !== undefined) this.settleTokens(token, error);
      return;
    }
    if (this.sentUpdates.length > 0 && mapSid === null) {
      // The emulator refused the new token (and closes the connection with 4001 next): keep
      // the one the connection held, which may still be good.
      const token = this.sentUpdates.shift() as string;
      this.updateRefused = true;
      if (this.token === token && this.socketToken !== undefined) this.token = this.socketToken;
      this.settleTokens(token, error);
      return;
    }
    this.events.emit('error', error);
  }

  private lost(socket: WebSocketLike, code: number, reason: string): void {
    if (this.socket !== socket) return;
    const usedToken = this.socketToken ?? this.socketAuthToken;
    const updateRefused = this.updateRefused;
    this.dropSocket();
    try {
      socket.close(1000);
    } catch {
      // already closed
    }
    if (this.closed) return;
    for (const sub of this.subscriptions.values()) sub.status = 'new';
    if (code === CLOSE_DENIED) {
      if (updateRefused || (usedToken !== undefined && usedToken !== this.token)) {
        // A newer token came meanwhile, or the connection was closed for a token update it
        // refused while the token it held may still be good: connect again at once.
        this.connect();
        return;
      }
      const error = this.deniedError(reason);
      if (usedToken !== undefined) this.settleTokens(usedToken, error);
      // map() calls waiting for their first subscription fail; open Maps stay, and are
      // subscribed again after updateToken().
      for (const sub of [...this.subscriptions.values()]) {
        const waiters = sub.waiters.splice(0);
        if (waiters.length === 0) continue;
        for (const waiter of waiters) waiter.reject(error);
      }
      this.setState('denied');
      return;
    }
    this.setState('connecting');
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer !== undefined) return;
    const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** Math.min(this.attempts, 20));
    this.attempts += 1;
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect();
    }, delay);
  }

  private sendSubscribe(sub: Subscription): void {
    if (sub.status !== 'new' || !this.socket || !this.authenticated) return;
    sub.status = 'requested';
    this.send({ type: 'subscribe', map_sid: sub.sid });
  }

  private sendUpdate(token: string): void {
    this.sentUpdates.push(token);
    this.send({ type: 'updateToken', token });
  }

  private send(message: Record<string, unknown>): void {
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN) return;
    try {
      socket.send(JSON.stringify(message));
    } catch {
      // The close event follows.
    }
  }

  /** Resolve (or, with an error, reject) updateToken() calls up to the last one for `token`. */
  private settleTokens(token: string, error: unknown): void {
    let last = -1;
    this.tokenWaiters.forEach((waiter, index) => {
      if (waiter.token === token) last = index;
    });
    if (last < 0) return;
    for (const waiter of this.tokenWaiters.splice(0, last + 1)) {
      if (error === undefined) waiter.resolve();
      else waiter.reject(error);
    }
  }

  private dropSocket(): void {
    const socket = this.socket;
    this.socket = undefined;
    this.authenticated = false;
    this.updateRefused = false;
    this.sentUpdates = [];
    this.clearHandshake();
    if (socket) {
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      socket.onerror = null;
    }
  }

  private setState(next: ConnectionState): void {
    if (this.state === next) return;
    this.state = next;
    this.events.emit('connectionStateChanged', next);
  }

  private clearRetry(): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private clearHandshake(): void {
    if (this.handshakeTimer !== undefined) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
  }

  private assertOpen(): void {
    if (this.closed) throw this.shutDownError();
  }

  private deniedError(reason = ''): EmulatorSyncError {
    return new EmulatorSyncError(
      `The emulator refused the token${reason ? `: ${reason}` : ''}; call updateToken()`,
      401,
      20104,
    );
  }

  private shutDownError(): EmulatorSyncError {
    return new EmulatorSyncError('The client was shut down', 0);
  }
}

/** Whether `event` is one of a Map's item events. */
export function isItemEvent(event: string): event is 'itemAdded' | 'itemUpdated' | 'itemRemoved' {
  return ITEM_EVENTS.has(event);
}
