import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';

import {
  EmulatorSyncClient,
  EmulatorSyncError,
  type EmulatorItemEvent,
  type EmulatorItemRemovedEvent,
  type EmulatorSyncClientOptions,
  type WebSocketConstructorLike,
} from '../../src/emulator.js';
import type { SyncClientLike, SyncMapLike } from '../../src/sync.js';
import { watchWorkerChannel } from '../../src/watcher.js';
import { FakeSyncServer, settle, until } from '../support/fake-emulator.js';

// Type-level: the adapter fits the package's client shape, and the browser's WebSocket fits
// the adapter's constructor option.
type Fits<T, U> = T extends U ? true : never;
const _client: Fits<EmulatorSyncClient, SyncClientLike> = true;
const _socket: Fits<typeof WebSocket, WebSocketConstructorLike> = true;
void _client;
void _socket;

const WORKER = 'WK00000000000000000000000000000001';
const MAP = `flex-bridge.worker.${WORKER}`;

function setup(tokens: string[] = ['token-1'], extra: Partial<EmulatorSyncClientOptions> = {}) {
  const server = new FakeSyncServer(tokens);
  const states: string[] = [];
  const client = new EmulatorSyncClient(tokens[0] ?? 'token-1', {
    baseUrl: 'http://127.0.0.1:8700/',
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    minReconnectDelayMs: 0,
    maxReconnectDelayMs: 0,
    ...extra,
  });
  client.on('connectionStateChanged', (state: string) => states.push(state));
  return { server, client, states };
}

function item(intent: string, phase: 'pending' | 'applied' | 'failed', status: string | null = null) {
  return {
    v: 1,
    intent_id: intent,
    op: 'accept',
    phase,
    task_sid: 'WT00000000000000000000000000000001',
    reservation_sid: 'WR00000000000000000000000000000001',
    worker_sid: WORKER,
    source: 'policy',
    requested_at: '2024-05-01T12:00:00.000Z',
    updated_at: '2024-05-01T12:00:00.000Z',
    reservation_status: status,
    error: null,
  };
}

describe('EmulatorSyncClient: connecting', () => {
  it('authenticates with its token on the SDK socket and says connected', async () => {
    const { server, client, states } = setup();
    assert.equal(client.connectionState, 'connecting');
    await until(() => client.connectionState === 'connected', 'connected');
    assert.equal(server.sockets.length, 1);
    assert.equal(server.last.url, 'ws://127.0.0.1:8700/sdk/sync/v1/ws');
    assert.deepEqual(server.last.sent[0], { type: 'auth', token: 'token-1' });
    assert.deepEqual(states, ['connected']);
    await client.shutdown();
    assert.deepEqual(states, ['connected', 'disconnecting', 'disconnected']);
    assert.equal(client.connectionState, 'disconnected');
  });

  it('uses wss for an https base URL', async () => {
    const server = new FakeSyncServer();
    const client = new EmulatorSyncClient('token-1', {
      baseUrl: 'https://emulator.example',
      WebSocket: server.WebSocket,
      fetch: server.fetch,
    });
    assert.equal(server.last.url, 'wss://emulator.example/sdk/sync/v1/ws');
    await client.shutdown();
  });

  it('refuses a missing token, a bad base URL, and a missing WebSocket', () => {
    const server = new FakeSyncServer();
    assert.throws(() => new EmulatorSyncClient('', { baseUrl: 'http://x', WebSocket: server.WebSocket }), TypeError);
    assert.throws(() => new EmulatorSyncClient('t', { baseUrl: 'ftp://x', WebSocket: server.WebSocket }), TypeError);
    if (!('WebSocket' in globalThis)) {
      assert.throws(() => new EmulatorSyncClient('t', { baseUrl: 'http://x' }), /pass options.WebSocket/);
    }
  });

  it('goes to denied on 4001 and does not retry until updateToken', async () => {
    const { server, client, states } = setup(['good']);
    server.valid.delete('good');
    await until(() => client.connectionState === 'denied', 'denied');
    await settle(10);
    assert.equal(server.sockets.length, 1, 'no reconnect after a denial');
    server.valid.add('fresh');
    await client.updateToken('fresh');
    assert.equal(client.connectionState, 'connected');
    assert.equal(server.sockets.length, 2);
    assert.deepEqual(server.last.sent[0], { type: 'auth', token: 'fresh' });
    assert.deepEqual(states, ['denied', 'connecting', 'connected']);
    await client.shutdown();
  });

  it('retries with a capped, growing backoff after unexpected closes', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      const server = new FakeSyncServer();
      server.autoOpen = false;
      const client = new EmulatorSyncClient('token-1', {
        baseUrl: 'http://127.0.0.1:8700',
        WebSocket: server.WebSocket,
        fetch: server.fetch,
        minReconnectDelayMs: 100,
        maxReconnectDelayMs: 800,
      });
      // Each attempt fails at once (the emulator is down): 1006.
      const ceilings = [100, 200, 400, 800, 800, 800];
      for (const ceiling of ceilings) {
        const before = server.sockets.length;
        server.last.drop(1006);
        mock.timers.tick(0); // the close event
        assert.equal(client.connectionState, 'connecting');
        // Never sooner than half the ceiling (the jitter's floor)...
        mock.timers.tick(ceiling / 2 - 1);
        assert.equal(server.sockets.length, before, `no retry before ${ceiling / 2} ms`);
        // ...and never later than the ceiling.
        mock.timers.tick(ceiling / 2 + 1);
        assert.equal(server.sockets.length, before + 1, `a retry within ${ceiling} ms`);
      }
      // A successful connection resets the backoff.
      server.last.open();
      mock.timers.tick(0);
      mock.timers.tick(0);
      assert.equal(client.connectionState, 'connected');
      const before = server.sockets.length;
      server.last.drop(1006);
      mock.timers.tick(0);
      mock.timers.tick(100);
      assert.equal(server.sockets.length, before + 1);
      await client.shutdown();
      mock.timers.tick(10_000);
    } finally {
      mock.timers.reset();
    }
  });

  it('drops and retries a connection that never answers auth', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      const server = new FakeSyncServer();
      server.autoAuth = false;
      const client = new EmulatorSyncClient('token-1', {
        baseUrl: 'http://127.0.0.1:8700',
        WebSocket: server.WebSocket,
        fetch: server.fetch,
        handshakeTimeoutMs: 1000,
        minReconnectDelayMs: 0,
        maxReconnectDelayMs: 0,
      });
      mock.timers.tick(0);
      assert.equal(server.sockets.length, 1);
      mock.timers.tick(1000);
      assert.ok(server.sockets[0]?.closedByClient, 'the silent socket was closed');
      mock.timers.tick(0);
      assert.equal(server.sockets.length, 2);
      await client.shutdown();
    } finally {
      mock.timers.reset();
    }
  });
});

describe('EmulatorSyncClient: maps', () => {
  it('resolves map() only once the subscription is acknowledged', async () => {
    const { server, client } = setup();
    server.autoSubscribe = false;
    let opened = false;
    const pending = client.map({ id: MAP, mode: 'open_or_create' }).then((map) => {
      opened = true;
      return map;
    });
    await until(() => server.sockets[0]?.sentOfType('subscribe').length === 1, 'the subscribe');
    const sid = server.sidOf(MAP) as string;
    assert.deepEqual(server.last.sentOfType('subscribe'), [{ type: 'subscribe', map_sid: sid }]);
    await settle();
    assert.equal(opened, false, 'not before the ack');
    server.answerSubscribe(server.last, sid);
    const map = await pending;
    assert.equal(map.sid, sid);
    assert.equal(map.uniqueName, MAP);
    assert.deepEqual(server.requests[0], { method: 'POST', path: '/sdk/sync/v1/Maps', token: 'token-1' });
    await client.shutdown();
  });

  it('accepts a plain string id, like twilio-sync', async () => {
    const { client, server } = setup();
    const map = await client.map(MAP);
    assert.equal(map.sid, server.sidOf(MAP));
    await client.shutdown();
  });

  it('delivers item events shaped like twilio-sync', async () => {
    const { server, client } = setup();
    const map = await client.map({ id: MAP });
    const seen: [string, unknown][] = [];
    map.on('itemAdded', (args: EmulatorItemEvent) => seen.push(['itemAdded', args]));
    map.on('itemUpdated', (args: EmulatorItemEvent) => seen.push(['itemUpdated', args]));
    map.on('itemRemoved', (args: EmulatorItemRemovedEvent) => seen.push(['itemRemoved', args]));
    server.put(map.sid, 'WR1', { a: 1 });
    server.put(map.sid, 'WR1', { a: 2 });
    server.remove(map.sid, 'WR1');
    await until(() => seen.length === 3, 'three events');
    assert.equal(seen[0]?.[0], 'itemAdded');
    const added = seen[0]?.[1] as EmulatorItemEvent;
    assert.equal(added.isLocal, false);
    assert.equal(added.item.key, 'WR1');
    assert.deepEqual(added.item.data, { a: 1 });
    assert.equal(typeof added.item.revision, 'string');
    assert.ok(added.item.dateUpdated instanceof Date);
    assert.equal(seen[1]?.[0], 'itemUpdated');
    assert.deepEqual((seen[1]?.[1] as EmulatorItemEvent).item.data, { a: 2 });
    assert.deepEqual(seen[2], ['itemRemoved', { key: 'WR1', isLocal: false }]);
    await client.shutdown();
  });

  it('ignores events of maps it did not subscribe to, and of closed handles', async () => {
    const { server, client } = setup();
    const map = await client.map({ id: MAP });
    const other = server.createMap('other');
    let count = 0;
    map.on('itemAdded', () => (count += 1));
    server.last.push({ type: 'itemAdded', map_sid: other, key: 'k', data: {}, revision: '1' });
    map.close();
    server.last.push({ type: 'itemAdded', map_sid: map.sid, key: 'k', data: {}, revision: '2' });
    await settle();
    assert.equal(count, 0);
    await assert.rejects(map.getItems(), EmulatorSyncError);
    await client.shutdown();
  });

  it('shares one subscription between handles and unsubscribes with the last', async () => {
    const { server, client } = setup();
    const first = await client.map({ id: MAP });
    const second = await client.map({ id: MAP });
    assert.equal(server.last.sentOfType('subscribe').length, 1);
    let a = 0;
    let b = 0;
    first.on('itemAdded', () => (a += 1));
    second.on('itemAdded', () => (b += 1));
    server.put(first.sid, 'k1', {});
    await until(() => a === 1 && b === 1, 'both handles');
    first.close();
    assert.equal(server.last.sentOfType('unsubscribe').length, 0);
    server.put(first.sid, 'k2', {});
    await until(() => b === 2, 'the second handle');
    assert.equal(a, 1);
    second.close();
    assert.deepEqual(server.last.sentOfType('unsubscribe'), [{ type: 'unsubscribe', map_sid: first.sid }]);
    await client.shutdown();
  });

  it('turns HTTP errors into EmulatorSyncError with Twilio code and status', async () => {
    const { client } = setup();
    await assert.rejects(client.map({ id: 'nothing', mode: 'open_existing' }), (error: unknown) => {
      assert.ok(error instanceof EmulatorSyncError);
      assert.equal(error.status, 404);
      assert.equal(error.code, 54100);
      assert.match(error.message, /not found/);
      assert.equal(error.moreInfo, 'https://www.twilio.com/docs/errors/54100');
      return true;
    });
    await client.map({ id: 'made', mode: 'create_new' });
    await assert.rejects(client.map({ id: 'made', mode: 'create_new' }), { status: 409, code: 54301 });
    await assert.rejects(client.map({ id: 'x', mode: 'bogus' as 'open_or_create' }), TypeError);
    await client.shutdown();
  });

  it('rejects a subscription the emulator refuses, and closes its handle', async () => {
    const { server, client } = setup();
    const pending = client.map({ id: MAP });
    await until(() => server.maps.size === 1, 'the map');
    const sid = server.sidOf(MAP) as string;
    server.maps.delete(sid); // gone before the subscribe arrives
    await assert.rejects(pending, { code: 54100 });
    await client.shutdown();
  });

  it('pages getItems() with nextPage()', async () => {
    const { server, client } = setup();
    const map = await client.map({ id: MAP });
    for (const key of ['a', 'b', 'c', 'd', 'e']) server.putQuietly(map.sid, key, { key });
    let page = await map.getItems({ pageSize: 2 });
    const keys: string[][] = [page.items.map((i) => i.key)];
    while (page.hasNextPage) {
      page = await page.nextPage();
      keys.push(page.items.map((i) => i.key));
    }
    assert.deepEqual(keys, [['a', 'b'], ['c', 'd'], ['e']]);
    assert.equal(page.hasPrevPage, false);
    await assert.rejects(page.nextPage(), EmulatorSyncError);
    const items = server.requests.filter((r) => r.method === 'GET').map((r) => r.path);
    assert.equal(items[0], `/sdk/sync/v1/Maps/${map.sid}/Items?pageSize=2`);
    assert.equal(items[1], `/sdk/sync/v1/Maps/${map.sid}/Items?pageSize=2&pageToken=b`);
    await client.shutdown();
  });

  it('applies from and order=desc on the client', async () => {
    const { server, client } = setup();
    const map = await client.map({ id: MAP });
    for (const key of ['a', 'b', 'c', 'd']) server.putQuietly(map.sid, key, {});
    const from = await map.getItems({ from: 'b', pageSize: 2 });
    assert.deepEqual(from.items.map((i) => i.key), ['b', 'c']);
    assert.deepEqual((await from.nextPage()).items.map((i) => i.key), ['d']);
    const desc = await map.getItems({ order: 'desc', from: 'c' });
    assert.deepEqual(desc.items.map((i) => i.key), ['c', 'b', 'a']);
    await assert.rejects(map.getItems({ pageSize: 0 }), RangeError);
    await client.shutdown();
  });
});

describe('EmulatorSyncClient: reconnecting', () => {
  it('re-subscribes every open map after a drop, then says connected', async () => {
    const { server, client, states } = setup();
    const map = await client.map({ id: MAP });
    const other = await client.map({ id: 'other' });
    server.autoSubscribe = false;
    server.last.drop(1006);
    await until(() => server.sockets.length === 2 && server.last.sentOfType('subscribe').length === 2, 'resubscribed');
    assert.equal(client.connectionState, 'connecting', 'not connected before the maps are subscribed');
    server.answerSubscribe(server.last, map.sid);
    await settle();
    assert.equal(client.connectionState, 'connecting');
    server.answerSubscribe(server.last, other.sid);
    await until(() => client.connectionState === 'connected', 'connected');
    assert.deepEqual(states, ['connected', 'connecting', 'connected']);
    // Events flow on the new connection.
    let got = 0;
    map.on('itemAdded', () => (got += 1));
    server.put(map.sid, 'k', {});
    await until(() => got === 1, 'an event after the reconnect');
    await client.shutdown();
  });

  it('reconnects after 1008 (the client fell behind)', async () => {
    const { server, client } = setup();
    await client.map({ id: MAP });
    server.last.drop(1008, 'behind');
    await until(() => server.sockets.length === 2 && client.connectionState === 'connected', 'reconnected');
    assert.equal(server.last.sentOfType('subscribe').length, 1);
    await client.shutdown();
  });

  it('a map() during a drop resolves once the new connection subscribes it', async () => {
    const { server, client } = setup();
    await until(() => client.connectionState === 'connected', 'connected');
    server.autoOpen = false;
    server.last.drop(1006);
    await until(() => server.sockets.length === 2, 'the retry');
    const pending = client.map({ id: MAP });
    await settle();
    server.last.open();
    const map = await pending;
    assert.equal(map.sid, server.sidOf(MAP));
    await client.shutdown();
  });

  it('fails pending map() calls on denial, keeps open maps, and restores them after updateToken', async () => {
    const { server, client, states } = setup(['old']);
    const map = await client.map({ id: MAP });
    server.autoSubscribe = false;
    // The token expires: the emulator says so, then closes with 4001.
    const expired: number[] = [];
    client.on('tokenExpired', () => expired.push(1));
    const pendingMap = client.map({ id: 'other' });
    await until(() => server.last.sentOfType('subscribe').length === 1, 'a pending subscribe');
    server.last.push({ type: 'tokenExpired' });
    server.last.drop(4001, 'token expired');
    server.valid.delete('old');
    await assert.rejects(pendingMap, { status: 401 });
    assert.equal(client.connectionState, 'denied');
    assert.deepEqual(expired, [1]);
    server.valid.add('new');
    server.autoSubscribe = true;
    await client.updateToken('new');
    assert.equal(client.connectionState, 'connected');
    assert.deepEqual(server.last.sentOfType('subscribe'), [{ type: 'subscribe', map_sid: map.sid }]);
    assert.deepEqual(states.slice(-3), ['denied', 'connecting', 'connected']);
    await client.shutdown();
  });
});

describe('EmulatorSyncClient: tokens', () => {
  it('sends updateToken on the open connection and resolves on tokenUpdated', async () => {
    const { server, client } = setup(['t1', 't2']);
    await until(() => client.connectionState === 'connected', 'connected');
    await client.updateToken('t2');
    assert.deepEqual(server.last.sentOfType('updateToken'), [{ type: 'updateToken', token: 't2' }]);
    assert.equal(server.last.token, 't2');
    assert.equal(server.sockets.length, 1);
    // HTTP calls use the new token.
    await client.map({ id: MAP });
    assert.equal(server.requests.at(-1)?.token, 't2');
    await client.shutdown();
  });

  it('rejects updateToken when the emulator refuses the token, and goes on with the old one', async () => {
    const { server, client, states } = setup(['t1']);
    const map = await client.map({ id: MAP });
    await assert.rejects(client.updateToken('bad'), { code: 20101 });
    // The emulator closed the connection (4001); the client comes back with its good token.
    await until(() => server.sockets.length === 2 && client.connectionState === 'connected', 'back');
    assert.deepEqual(server.last.sent[0], { type: 'auth', token: 't1' });
    assert.deepEqual(server.last.sentOfType('subscribe'), [{ type: 'subscribe', map_sid: map.sid }]);
    assert.ok(!states.includes('denied'));
    await assert.rejects(client.updateToken(''), TypeError);
    await client.shutdown();
  });

  it('reports tokenAboutToExpire with the seconds left', async () => {
    const { server, client } = setup();
    await until(() => client.connectionState === 'connected', 'connected');
    const seen: unknown[] = [];
    client.on('tokenAboutToExpire', (ttl: unknown) => seen.push(ttl));
    const soon = new Date(Date.now() + 20_000).toISOString();
    server.last.push({ type: 'tokenAboutToExpire', expires: soon });
    await until(() => seen.length === 1, 'the event');
    assert.equal(typeof seen[0], 'number');
    assert.ok((seen[0] as number) > 0 && (seen[0] as number) <= 20);
    await client.shutdown();
  });

  it('reconnects at once with a token given while the old one was expiring', async () => {
    const { server, client, states } = setup(['old', 'new']);
    await client.map({ id: MAP });
    // updateToken is sent, but the emulator expires the old token before it answers.
    server.autoSubscribe = true;
    const socket = server.last;
    const origHandle = server.handle.bind(server);
    server.handle = (s, message) => {
      if (message['type'] === 'updateToken') {
        s.push({ type: 'tokenExpired' });
        s.drop(4001, 'token expired');
        return;
      }
      origHandle(s, message);
    };
    const updated = client.updateToken('new');
    server.handle = origHandle;
    await updated;
    assert.notEqual(server.last, socket);
    assert.deepEqual(server.last.sent[0], { type: 'auth', token: 'new' });
    assert.equal(client.connectionState, 'connected');
    assert.ok(!states.includes('denied'), 'never denied');
    await client.shutdown();
  });

  it('sends a token given during the handshake once connected', async () => {
    const { server, client } = setup(['t1', 't2']);
    server.autoAuth = false;
    await until(() => server.last.sent.length === 1, 'auth sent');
    const updated = client.updateToken('t2');
    server.answerAuth(server.last, 't1');
    await updated;
    assert.deepEqual(server.last.sentOfType('updateToken'), [{ type: 'updateToken', token: 't2' }]);
    await client.shutdown();
  });
});

describe('EmulatorSyncClient: shutdown', () => {
  it('closes the socket, rejects what waits, and never reconnects', async () => {
    const { server, client } = setup();
    server.autoSubscribe = false;
    const pending = client.map({ id: MAP });
    await until(() => server.last.sentOfType('subscribe').length === 1, 'subscribe');
    await client.shutdown();
    await assert.rejects(pending, EmulatorSyncError);
    assert.ok(server.last.closedByClient);
    await settle(10);
    assert.equal(server.sockets.length, 1);
    await assert.rejects(client.map({ id: MAP }), EmulatorSyncError);
    await assert.rejects(client.updateToken('x'), EmulatorSyncError);
    await client.shutdown(); // twice is fine
  });
});

describe('EmulatorSyncClient with watchWorkerChannel', () => {
  it('gives the watcher the snapshot, live events, and a re-read after a reconnect', async () => {
    const { server, client } = setup();
    const sid = server.createMap(MAP);
    server.putQuietly(sid, 'WR1', item('in_000000000001aaaaaaaaaa', 'pending'));
    const changes: [string, string | undefined][] = [];
    const watcher = await watchWorkerChannel(client as SyncClientLike, WORKER, (key, value) =>
      changes.push([key, value?.phase]),
    );
    assert.deepEqual(changes, [['WR1', 'pending']]);
    server.put(sid, 'WR1', item('in_000000000001aaaaaaaaaa', 'applied', 'accepted'));
    await until(() => changes.length === 2, 'the live event');
    assert.equal(watcher.current('WR1')?.reservation_status, 'accepted');
    // The connection drops; meanwhile an item is written; after the reconnect the watcher
    // reads the snapshot again and finds it.
    server.autoOpen = false;
    server.last.drop(1006);
    await until(() => server.sockets.length === 2, 'the retry');
    server.putQuietly(sid, 'WR2', item('in_000000000002aaaaaaaaaa', 'pending'));
    server.last.open();
    await until(() => watcher.current('WR2') !== undefined, 'the missed item, from a re-read');
    watcher.close();
    await client.shutdown();
  });

  it('the map it closes is unsubscribed', async () => {
    const { server, client } = setup();
    const watcher = await watchWorkerChannel(client as SyncClientLike, WORKER, () => undefined);
    const sid = server.sidOf(MAP) as string;
    watcher.close();
    assert.deepEqual(server.last.sentOfType('unsubscribe'), [{ type: 'unsubscribe', map_sid: sid }]);
    await client.shutdown();
  });
});

// Keeps SyncMapLike in use for the type-level check above.
export type _Map = SyncMapLike;
