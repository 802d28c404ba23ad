/**
 * Stand-ins for what the package talks to: twilio-sync's SyncClient and SyncMap (the shape of
 * 2.x-4.x), Flex's Actions framework and Manager, and `fetch`. Each records what was asked of
 * it, so tests can check calls and their order.
 */
import type { SyncClientLike, SyncMapLike, SyncPaginatorLike } from '../../src/index.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Listener = (...args: any[]) => unknown;

/** A tiny EventEmitter: on/addListener/removeListener/emit, in registration order. */
export class Emitter {
  private readonly table = new Map<string, Listener[]>();

  on(event: string, listener: Listener): this {
    const list = this.table.get(event) ?? [];
    list.push(listener);
    this.table.set(event, list);
    return this;
  }

  addListener(event: string, listener: Listener): this {
    return this.on(event, listener);
  }

  removeListener(event: string, listener: Listener): this {
    const list = this.table.get(event) ?? [];
    const at = list.indexOf(listener);
    if (at >= 0) list.splice(at, 1);
    return this;
  }

  emit(event: string, ...args: unknown[]): boolean {
    const list = [...(this.table.get(event) ?? [])];
    for (const listener of list) listener(...args);
    return list.length > 0;
  }

  listeners(event: string): Listener[] {
    return [...(this.table.get(event) ?? [])];
  }

  listenerCount(event?: string): number {
    if (event !== undefined) return this.table.get(event)?.length ?? 0;
    let count = 0;
    for (const list of this.table.values()) count += list.length;
    return count;
  }
}

interface Entry {
  key: string;
  data: unknown;
}

const copy = <T>(data: T): T => (data === undefined ? data : (JSON.parse(JSON.stringify(data)) as T));

/**
 * A SyncMap: `on`/`removeListener`, `getItems({ pageSize })` paginating over the data as it was
 * when `getItems` was called, and `close`. `set`/`remove` change the data and (unless `silent`,
 * i.e. written while this client was not listening) emit the event twilio-sync would.
 */
export class StandInSyncMap extends Emitter implements SyncMapLike {
  readonly store = new Map<string, unknown>();
  readonly getItemsCalls: { pageSize?: number }[] = [];
  nextPageCalls = 0;
  closed = false;
  /** Runs after `getItems` took its snapshot, before it resolves (emit events here). */
  duringRead: ((call: number) => void | Promise<void>) | undefined;
  /** Runs before each `nextPage()` resolves. */
  duringPage: ((page: number) => void | Promise<void>) | undefined;
  /** Errors the next `getItems` calls throw, in order. */
  readonly getItemsFailures: unknown[] = [];

  constructor(
    readonly name: string,
    readonly log: string[],
  ) {
    super();
  }

  override on(event: string, listener: Listener): this {
    this.log.push(`map.on ${event}`);
    return super.on(event, listener);
  }

  override removeListener(event: string, listener: Listener): this {
    this.log.push(`map.removeListener ${event}`);
    return super.removeListener(event, listener);
  }

  async getItems(query: { pageSize?: number } = {}): Promise<SyncPaginatorLike> {
    this.log.push('map.getItems');
    this.getItemsCalls.push({ ...query });
    const call = this.getItemsCalls.length;
    const snapshot: Entry[] = [...this.store].map(([key, data]) => ({ key, data: copy(data) }));
    await Promise.resolve();
    if (this.getItemsFailures.length > 0) throw this.getItemsFailures.shift();
    if (this.duringRead) await this.duringRead(call);
    return this.page(snapshot, 0, query.pageSize ?? 50, 1);
  }

  private page(snapshot: Entry[], from: number, size: number, number: number): SyncPaginatorLike {
    const items = snapshot.slice(from, from + size);
    return {
      items,
      hasNextPage: from + size < snapshot.length,
      nextPage: async () => {
        this.nextPageCalls += 1;
        this.log.push('page.nextPage');
        if (from + size >= snapshot.length) throw new Error('no next page');
        if (this.duringPage) await this.duringPage(number + 1);
        return this.page(snapshot, from + size, size, number + 1);
      },
    };
  }

  /** Write an item; emits itemAdded/itemUpdated unless `silent`. */
  set(key: string, data: unknown, options: { silent?: boolean } = {}): void {
    const existed = this.store.has(key);
    this.store.set(key, copy(data));
    if (!options.silent) {
      this.emit(existed ? 'itemUpdated' : 'itemAdded', {
        item: { key, data: copy(data), lastEventId: 0, dateUpdated: new Date() },
        isLocal: false,
      });
    }
  }

  /** Remove an item (its TTL ran out); emits itemRemoved unless `silent`. */
  remove(key: string, options: { silent?: boolean } = {}): void {
    const previousItemData = this.store.get(key);
    this.store.delete(key);
    if (!options.silent) this.emit('itemRemoved', { key, isLocal: false, previousItemData });
  }

  close(): void {
    this.log.push('map.close');
    this.closed = true;
  }
}

/**
 * A SyncClient: `map({ id, mode })` opens (one shared StandInSyncMap per name), `on`/
 * `removeListener` for connectionStateChanged/tokenAboutToExpire/tokenExpired, `updateToken`.
 */
export class StandInSyncClient extends Emitter implements SyncClientLike {
  readonly log: string[] = [];
  readonly mapCalls: { id: string; mode?: string }[] = [];
  readonly maps = new Map<string, StandInSyncMap>();
  readonly tokens: string[] = [];
  /** Errors the next `map()` calls throw, in order. */
  readonly mapFailures: unknown[] = [];

  async map(options: { id: string; mode?: 'open_or_create' | 'open_existing' | 'create_new' }): Promise<StandInSyncMap> {
    this.log.push(`client.map ${options.id}`);
    this.mapCalls.push({ ...options });
    await Promise.resolve();
    if (this.mapFailures.length > 0) throw this.mapFailures.shift();
    const map = this.mapFor(options.id);
    map.closed = false;
    return map;
  }

  /** The map of that name, created on first use (what the bridge writes to). */
  mapFor(name: string): StandInSyncMap {
    let map = this.maps.get(name);
    if (!map) {
      map = new StandInSyncMap(name, this.log);
      this.maps.set(name, map);
    }
    return map;
  }

  async updateToken(token: string): Promise<void> {
    this.log.push('client.updateToken');
    this.tokens.push(token);
  }

  /** What twilio-sync emits as the connection goes down and comes back. */
  setConnectionState(state: 'connecting' | 'connected' | 'disconnecting' | 'disconnected' | 'denied' | 'error'): void {
    this.emit('connectionStateChanged', state);
  }
}

// ---------------------------------------------------------------------------------------------
// Flex

export type ActionListener = (payload: unknown, abort: () => void) => unknown;

export interface InvokeResult {
  /** A before-listener called abort(). */
  aborted: boolean;
  /** Flex's own action ran (it was not aborted). */
  ran: boolean;
}

/**
 * Flex's Actions framework, for one action at a time: `invokeAction(name, payload)` awaits each
 * `before<Name>` listener in turn (async ones too), stops when one aborts, and otherwise runs the
 * action's default implementation (for AcceptTask: Flex's own accept, recorded in `performed`).
 */
export class FakeActions {
  private readonly listeners = new Map<string, ActionListener[]>();
  readonly performed: { name: string; payload: unknown }[] = [];

  addListener(name: string, listener: ActionListener): void {
    const list = this.listeners.get(name) ?? [];
    list.push(listener);
    this.listeners.set(name, list);
  }

  removeListener(name: string, listener: ActionListener): void {
    const list = this.listeners.get(name) ?? [];
    const at = list.indexOf(listener);
    if (at >= 0) list.splice(at, 1);
  }

  listenerCount(name: string): number {
    return this.listeners.get(name)?.length ?? 0;
  }

  async invokeAction(name: string, payload: unknown): Promise<InvokeResult> {
    let aborted = false;
    const abort = (): void => {
      aborted = true;
    };
    for (const listener of [...(this.listeners.get(`before${name}`) ?? [])]) {
      await listener(payload, abort);
      if (aborted) break;
    }
    if (aborted) return { aborted, ran: false };
    this.performed.push({ name, payload });
    for (const listener of [...(this.listeners.get(`after${name}`) ?? [])]) {
      await listener(payload, abort);
    }
    return { aborted: false, ran: true };
  }
}

export class FakeFlex {
  readonly Actions = new FakeActions();
}

/** A Flex ITask, as far as the guard reads it. */
export interface FakeTask {
  sid: string;
  taskSid: string;
  taskChannelUniqueName: string;
}

/**
 * Flex's Manager: `user.token`, `events` (tokenUpdated), `workerClient.sid`, and optionally
 * `insightsClient`. `refreshToken` does what Flex does: it updates the session's token, then
 * emits tokenUpdated with the new token payload.
 */
export class FakeManager {
  user: { token: string };
  readonly events = new Emitter();
  readonly workerClient: { sid: string };
  insightsClient: StandInSyncClient | undefined;

  constructor(options: { token: string; workerSid: string; insightsClient?: StandInSyncClient }) {
    this.user = { token: options.token };
    this.workerClient = { sid: options.workerSid };
    this.insightsClient = options.insightsClient;
  }

  refreshToken(token: string): void {
    this.user = { token };
    this.events.emit('tokenUpdated', {
      token,
      identity: 'agent@example.com',
      roles: ['agent'],
      expiration: new Date(Date.now() + 3_600_000).toISOString(),
    });
  }
}

// ---------------------------------------------------------------------------------------------
// fetch

export interface RecordedRequest {
  url: string;
  method: string;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: string | undefined;
  /** The body parsed as JSON, or undefined. */
  json: unknown;
  signal: AbortSignal | undefined;
}

export type FetchHandler = (request: RecordedRequest, index: number) => Response | Promise<Response>;

export interface FetchStub {
  fetch: typeof fetch;
  requests: RecordedRequest[];
}

/** A `fetch` that records each request and answers with `handler`. */
export function fetchStub(handler: FetchHandler): FetchStub {
  const requests: RecordedRequest[] = [];
  const stub = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, key) => {
      headers[key] = value;
    });
    const body = typeof init.body === 'string' ? init.body : undefined;
    let json: unknown;
    try {
      json = body === undefined ? undefined : JSON.parse(body);
    } catch {
      json = undefined;
    }
    const request: RecordedRequest = {
      url,
      method: (init.method ?? 'GET').toUpperCase(),
      headers,
      body,
      json,
      signal: init.signal ?? undefined,
    };
    requests.push(request);
    return handler(request, requests.length - 1);
  };
  return { fetch: stub as typeof fetch, requests };
}

/** A JSON answer. */
export function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

/** An HTML answer, as a proxy in front of the bridge gives. */
export function html(status: number, text = '<html><body><h1>502 Bad Gateway</h1></body></html>'): Response {
  return new Response(text, { status, headers: { 'Content-Type': 'text/html' } });
}

/** A fetch that never answers: it rejects only when its request is aborted, as fetch does. */
export function hang(request: RecordedRequest): Promise<Response> {
  return new Promise<Response>((_resolve, reject) => {
    const signal = request.signal;
    if (!signal) return;
    const fail = (): void => reject(new DOMException('This operation was aborted', 'AbortError'));
    if (signal.aborted) fail();
    else signal.addEventListener('abort', fail, { once: true });
  });
}

/** A fetch failure like the browser's for a refused connection or a CORS failure. */
export function networkError(): TypeError {
  return new TypeError('Failed to fetch');
}
