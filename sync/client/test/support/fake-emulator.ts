/**
 * An in-memory stand-in for the emulator's SDK surface, for unit tests of `EmulatorSyncClient`:
 * a WebSocket class whose peer speaks the `/sdk/sync/v1/ws` protocol, and a `fetch` serving
 * `POST /sdk/sync/v1/Maps` and `GET /sdk/sync/v1/Maps/<sid>/Items`.
 *
 * Every server answer is delivered on a later macrotask (as a real socket would), and a test
 * can switch the automatic answers off (`autoSubscribe`, `autoAuth`) to hold the protocol at a
 * given step, inspect `sent`, and answer by hand.
 */
import type { WebSocketConstructorLike, WebSocketLike } from '../../src/emulator.js';

export type Message = Record<string, unknown>;

const later = (fn: () => void): void => {
  setTimeout(fn, 0);
};

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  /** What the client sent, parsed. */
  readonly sent: Message[] = [];
  closedByClient: { code: number | undefined; reason: string | undefined } | undefined;
  /** The token this connection authenticated with, once it did. */
  token: string | undefined;
  readonly subscribed = new Set<string>();

  constructor(
    readonly server: FakeSyncServer,
    readonly url: string,
  ) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    const message = JSON.parse(data) as Message;
    this.sent.push(message);
    this.server.handle(this, message);
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return;
    this.closedByClient = { code, reason };
    this.readyState = 2;
    later(() => this.finish(code ?? 1005, reason ?? ''));
  }

  // ------------------------------------------------------------------ the server's side
  open(): void {
    if (this.readyState !== 0) return;
    this.readyState = 1;
    this.onopen?.({});
  }

  push(message: Message): void {
    if (this.readyState !== 1) return;
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  /** The server closes the connection (e.g. 4001 denied, 1008 behind, 1006 lost). */
  drop(code: number, reason = ''): void {
    if (this.readyState === 3) return;
    this.readyState = 2;
    later(() => this.finish(code, reason));
  }

  private finish(code: number, reason: string): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.server.forget(this);
    this.onclose?.({ code, reason });
  }

  sentOfType(type: string): Message[] {
    return this.sent.filter((m) => m['type'] === type);
  }
}

export interface FakeItem {
  key: string;
  data: unknown;
  revision: number;
}

export class FakeSyncServer {
  /** Every socket ever made, in order. */
  readonly sockets: FakeSocket[] = [];
  /** Tokens the server accepts. */
  readonly valid = new Set<string>();
  /** Open sockets open on their own (off: the test calls `socket.open()`). */
  autoOpen = true;
  autoAuth = true;
  autoSubscribe = true;
  /** Maps by SID: unique name and items. */
  readonly maps = new Map<string, { name: string; items: Map<string, FakeItem> }>();
  /** HTTP requests seen: method and path. */
  readonly requests: { method: string; path: string; token: string | undefined }[] = [];
  private revision = 0;
  private live = new Set<FakeSocket>();

  constructor(tokens: string[] = ['token-1']) {
    for (const token of tokens) this.valid.add(token);
  }

  get last(): FakeSocket {
    const socket = this.sockets[this.sockets.length - 1];
    if (!socket) throw new Error('no socket yet');
    return socket;
  }

  /** The WebSocket constructor to give the client. */
  get WebSocket(): WebSocketConstructorLike {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const server = this;
    return class extends FakeSocket {
      constructor(url: string) {
        super(server, url);
        server.sockets.push(this);
        server.live.add(this);
        if (server.autoOpen) later(() => this.open());
      }
    };
  }

  forget(socket: FakeSocket): void {
    this.live.delete(socket);
  }

  handle(socket: FakeSocket, message: Message): void {
    switch (message['type']) {
      case 'auth':
        if (this.autoAuth) later(() => this.answerAuth(socket, String(message['token'])));
        return;
      case 'subscribe':
        if (this.autoSubscribe) later(() => this.answerSubscribe(socket, String(message['map_sid'])));
        return;
      case 'unsubscribe':
        socket.subscribed.delete(String(message['map_sid']));
        later(() => socket.push({ type: 'unsubscribed', map_sid: message['map_sid'] }));
        return;
      case 'updateToken':
        later(() => {
          const token = String(message['token']);
          if (this.valid.has(token)) {
            socket.token = token;
            socket.push({ type: 'tokenUpdated', expires: '2030-01-01T00:00:00Z' });
          } else {
            // As the emulator does: a refused token ends the connection.
            socket.push({ type: 'error', code: 20101, message: 'Invalid Access Token' });
            socket.drop(4001, 'Invalid Access Token');
          }
        });
        return;
      default:
        socket.push({ type: 'error', code: 20001, message: 'unknown message type' });
    }
  }

  answerAuth(socket: FakeSocket, token: string): void {
    if (this.valid.has(token)) {
      socket.token = token;
      socket.push({ type: 'connected', identity: 'agent', expires: '2030-01-01T00:00:00Z' });
    } else {
      socket.push({ type: 'error', code: 20101, message: 'Invalid Access Token' });
      socket.drop(4001, 'denied');
    }
  }

  answerSubscribe(socket: FakeSocket, sid: string): void {
    if (!this.maps.has(sid)) {
      socket.push({ type: 'error', code: 54100, message: `Map ${sid} not found`, map_sid: sid });
      return;
    }
    socket.subscribed.add(sid);
    socket.push({ type: 'subscribed', map_sid: sid });
  }

  /** Write an item and push the event to every subscribed socket. */
  put(sid: string, key: string, data: unknown): void {
    const map = this.maps.get(sid);
    if (!map) throw new Error(`no map ${sid}`);
    const type = map.items.has(key) ? 'itemUpdated' : 'itemAdded';
    const item = { key, data, revision: ++this.revision };
    map.items.set(key, item);
    this.broadcast(sid, {
      type,
      map_sid: sid,
      key,
      data,
      revision: String(item.revision),
      date_updated: '2024-05-01T12:00:00.000Z',
    });
  }

  remove(sid: string, key: string): void {
    const map = this.maps.get(sid);
    if (!map || !map.items.delete(key)) return;
    this.broadcast(sid, { type: 'itemRemoved', map_sid: sid, key, revision: String(++this.revision) });
  }

  /** Write an item without telling anyone (what a client misses while disconnected). */
  putQuietly(sid: string, key: string, data: unknown): void {
    const map = this.maps.get(sid);
    if (!map) throw new Error(`no map ${sid}`);
    map.items.set(key, { key, data, revision: ++this.revision });
  }

  private broadcast(sid: string, message: Message): void {
    for (const socket of this.live) if (socket.subscribed.has(sid)) socket.push(message);
  }

  /** Create a Map directly. */
  createMap(name: string): string {
    const sid = `MP${String(this.maps.size + 1).padStart(32, '0')}`;
    this.maps.set(sid, { name, items: new Map() });
    return sid;
  }

  sidOf(name: string): string | undefined {
    for (const [sid, map] of this.maps) if (map.name === name || sid === name) return sid;
    return undefined;
  }

  /** The `fetch` to give the client. */
  get fetch(): typeof fetch {
    return async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
      const url = new URL(String(input));
      const method = init?.method ?? 'GET';
      const auth = new Headers(init?.headers).get('Authorization') ?? '';
      const token = auth.startsWith('Bearer ') ? auth.slice(7) : undefined;
      this.requests.push({ method, path: url.pathname + url.search, token });
      const json = (status: number, body: unknown): Response =>
        new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
      const error = (status: number, code: number, message: string): Response =>
        json(status, { code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status });
      if (token === undefined || !this.valid.has(token)) return error(401, 20101, 'Invalid Access Token');
      if (method === 'POST' && url.pathname === '/sdk/sync/v1/Maps') {
        const body = JSON.parse(String(init?.body)) as { id: string; mode?: string };
        const mode = body.mode ?? 'open_or_create';
        let sid = this.sidOf(body.id);
        if (sid && mode === 'create_new') return error(409, 54301, `Map ${body.id} already exists`);
        if (!sid && mode === 'open_existing') return error(404, 54100, `Map ${body.id} not found`);
        const created = !sid;
        sid ??= this.createMap(body.id);
        return json(created ? 201 : 200, { sid, unique_name: body.id, revision: '0', date_expires: null });
      }
      const items = /^\/sdk\/sync\/v1\/Maps\/([^/]+)\/Items$/.exec(url.pathname);
      if (method === 'GET' && items) {
        const sid = this.sidOf(decodeURIComponent(items[1] ?? ''));
        const map = sid === undefined ? undefined : this.maps.get(sid);
        if (!map) return error(404, 54100, 'Map not found');
        const size = Number(url.searchParams.get('pageSize') ?? '50');
        const after = url.searchParams.get('pageToken');
        const keys = [...map.items.keys()].sort().filter((k) => after === null || k > after);
        const chunk = keys.slice(0, size);
        const rows = chunk.map((k) => {
          const item = map.items.get(k) as FakeItem;
          return {
            key: k,
            data: item.data,
            revision: String(item.revision),
            date_updated: '2024-05-01T12:00:00.000Z',
            date_expires: null,
          };
        });
        return json(200, { items: rows, next_page_token: keys.length > size ? (chunk[chunk.length - 1] ?? null) : null });
      }
      return error(404, 20404, 'not found');
    };
  }
}

/** Resolves once `predicate()` is true, checking after each macrotask (at most `turns`). */
export async function until(predicate: () => boolean, what = 'the condition', turns = 500): Promise<void> {
  for (let i = 0; i < turns; i += 1) {
    if (predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Lets every pending macrotask run (a few rounds). */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
}
