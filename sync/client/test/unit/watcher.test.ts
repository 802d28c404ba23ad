import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { watchWorkerChannel } from '../../src/index.js';
import type { ChannelWatcher, ReservationItem, WatchOptions } from '../../src/index.js';
import { RESERVATION_SID, TASK_SID, WORKER_SID, item, reservationSid, taskSid } from '../support/fixtures.js';
import { StandInSyncClient } from '../support/stand-ins.js';
import type { StandInSyncMap } from '../support/stand-ins.js';
import { deferred, flush, waitFor } from '../support/wait.js';

const MAP_NAME = `flex-bridge.worker.${WORKER_SID}`;
const R1 = RESERVATION_SID; // item()'s default reservation
const R2 = reservationSid(2);
const R3 = reservationSid(3);

type Change = [string, ReservationItem | undefined];

interface Setup {
  client: StandInSyncClient;
  map: StandInSyncMap;
  changes: Change[];
  errors: unknown[];
  onChange: (sid: string, data: ReservationItem | undefined) => void;
}

function setup(): Setup {
  const client = new StandInSyncClient();
  const map = client.mapFor(MAP_NAME);
  const changes: Change[] = [];
  const errors: unknown[] = [];
  return { client, map, changes, errors, onChange: (sid, data) => changes.push([sid, data]) };
}

async function start(s: Setup, options: WatchOptions = {}): Promise<ChannelWatcher> {
  return watchWorkerChannel(s.client, WORKER_SID, s.onChange, {
    onError: (error) => s.errors.push(error),
    ...options,
  });
}

/** An item of reservation `n` (its own task), for tests with several reservations. */
const itemOf = (n: number, rest: Parameters<typeof item>[0] = {}): ReservationItem =>
  item({
    reservation_sid: n === 1 ? RESERVATION_SID : reservationSid(n),
    task_sid: n === 1 ? TASK_SID : taskSid(n),
    ...rest,
  });

describe('watchWorkerChannel: opening and reading', () => {
  test('opens exactly flex-bridge.worker.<WK…> with mode open_or_create', async () => {
    const s = setup();
    const watcher = await start(s);
    assert.deepEqual(s.client.mapCalls, [{ id: MAP_NAME, mode: 'open_or_create' }]);
    watcher.close();
  });

  test('subscribes to itemAdded, itemUpdated and itemRemoved before it calls getItems', async () => {
    const s = setup();
    const watcher = await start(s);
    const firstRead = s.client.log.indexOf('map.getItems');
    assert.ok(firstRead > 0, s.client.log.join(', '));
    const before = s.client.log.slice(0, firstRead);
    for (const event of ['itemAdded', 'itemUpdated', 'itemRemoved']) {
      assert.ok(before.includes(`map.on ${event}`), `map.on ${event} before getItems: ${s.client.log.join(', ')}`);
    }
    assert.equal(s.client.log[0], `client.map ${MAP_NAME}`);
    watcher.close();
  });

  test('reads every page of the snapshot', async () => {
    const s = setup();
    const all = [1, 2, 3, 4, 5, 6, 7].map((n) => itemOf(n, { intentN: n, phase: 'applied', reservation_status: 'accepted' }));
    for (const data of all) s.map.set(data.reservation_sid, data, { silent: true });
    const watcher = await start(s, { pageSize: 3 });
    assert.deepEqual(s.map.getItemsCalls, [{ pageSize: 3 }]);
    assert.equal(s.map.nextPageCalls, 2);
    assert.equal(watcher.items().size, 7);
    for (const data of all) assert.deepEqual(watcher.current(data.reservation_sid), data);
    assert.equal(s.changes.length, 7);
    watcher.close();
  });

  test('reads pages of 100 unless told otherwise', async () => {
    const s = setup();
    const watcher = await start(s);
    assert.deepEqual(s.map.getItemsCalls, [{ pageSize: 100 }]);
    watcher.close();
  });

  test('a failing first getItems rejects, and leaves nothing subscribed', async () => {
    const s = setup();
    s.map.getItemsFailures.push(new Error('Sync said 503'));
    await assert.rejects(start(s), /Sync said 503/);
    assert.equal(s.map.listenerCount(), 0);
    assert.equal(s.client.listenerCount(), 0);
    assert.equal(s.map.closed, true);
  });

  test('a failing map() rejects, and leaves nothing subscribed', async () => {
    const s = setup();
    s.client.mapFailures.push(new Error('Access forbidden for identity'));
    await assert.rejects(start(s, { getToken: () => 'token-2' }), /Access forbidden/);
    assert.equal(s.client.listenerCount(), 0, 'listeners left on the client');
    // a dead watcher does not refresh tokens or re-read
    s.client.emit('tokenAboutToExpire', 60);
    s.client.setConnectionState('disconnected');
    s.client.setConnectionState('connected');
    await flush();
    assert.deepEqual(s.client.tokens, []);
    assert.equal(s.map.getItemsCalls.length, 0);
  });

  test('the watcher is usable before its first read resolves, and can be closed then', async () => {
    const s = setup();
    const gate = deferred();
    s.map.duringRead = () => gate.promise;
    const pending = watchWorkerChannel(s.client, WORKER_SID, s.onChange);
    assert.equal(pending.current(R1), undefined);
    await waitFor(() => s.map.getItemsCalls.length === 1, 'the read');
    const early = item({ phase: 'pending' });
    s.map.set(R1, early);
    assert.deepEqual(pending.current(R1), early);
    pending.close();
    gate.resolve();
    const watcher = await pending;
    assert.equal(s.map.closed, true);
    assert.equal(s.map.listenerCount(), 0);
    assert.equal(s.client.listenerCount(), 0);
    watcher.close();
  });

  test('closed before the map opens: the map is closed when it arrives', async () => {
    const s = setup();
    const pending = watchWorkerChannel(s.client, WORKER_SID, s.onChange);
    pending.close();
    await pending;
    assert.equal(s.map.closed, true);
    assert.equal(s.map.listenerCount(), 0);
    assert.equal(s.client.listenerCount(), 0);
    assert.equal(s.map.getItemsCalls.length, 0);
  });
});

describe('watchWorkerChannel: the ordering rule', () => {
  test('an event that arrives while the snapshot is read, newer than its item, wins', async () => {
    const s = setup();
    const pending = item({ intentN: 1, phase: 'pending' });
    const applied = item({ intentN: 1, phase: 'applied', reservation_status: 'accepted' });
    s.map.set(R1, pending, { silent: true });
    s.map.duringRead = () => s.map.set(R1, applied); // the snapshot still says pending
    const watcher = await start(s);
    assert.deepEqual(watcher.current(R1), applied);
    assert.deepEqual(s.changes, [[R1, applied]]);
    watcher.close();
  });

  test('an older snapshot never overwrites a newer intent that arrived as an event', async () => {
    const s = setup();
    const accepted = item({ intentN: 1, phase: 'applied', reservation_status: 'accepted' });
    const wrapup = item({ intentN: 2, op: 'wrapup', phase: 'pending' });
    s.map.set(R1, accepted, { silent: true });
    s.map.duringRead = () => s.map.set(R1, wrapup);
    const watcher = await start(s);
    assert.deepEqual(watcher.current(R1), wrapup);
    watcher.close();
  });

  test('an event during a later page of the snapshot also wins', async () => {
    const s = setup();
    for (const n of [1, 2, 3]) s.map.set(itemOf(n).reservation_sid, itemOf(n, { intentN: n, phase: 'pending' }), { silent: true });
    const newer = itemOf(3, { intentN: 3, phase: 'failed', reservation_status: 'timeout' });
    s.map.duringPage = (page) => {
      if (page === 3) s.map.set(R3, newer);
    };
    const watcher = await start(s, { pageSize: 1 });
    assert.deepEqual(watcher.current(R3), newer);
    watcher.close();
  });

  test('a newer intent_id wins', async () => {
    const s = setup();
    const watcher = await start(s);
    const accepted = item({ intentN: 1, phase: 'applied', reservation_status: 'accepted' });
    const wrapup = item({ intentN: 2, op: 'wrapup', phase: 'pending' });
    s.map.set(R1, accepted);
    s.map.set(R1, wrapup);
    assert.deepEqual(watcher.current(R1), wrapup);
    // and the older intent's late rewrite does not come back
    s.map.set(R1, { ...accepted, reservation_status: 'wrapping' });
    assert.deepEqual(watcher.current(R1), wrapup);
    watcher.close();
  });

  test('items never move backwards within an intent', async () => {
    const s = setup();
    const watcher = await start(s);
    const pending = item({ intentN: 1, phase: 'pending' });
    const failed = item({ intentN: 1, phase: 'failed', reservation_status: null });
    const applied = item({ intentN: 1, phase: 'applied', reservation_status: 'accepted' });
    s.map.set(R1, applied);
    s.map.set(R1, pending); // late pending of the same intent
    assert.deepEqual(watcher.current(R1), applied);
    s.map.set(R1, failed); // applied never turns failed
    assert.deepEqual(watcher.current(R1), applied);
    assert.deepEqual(s.changes, [[R1, applied]]);
    // failed → applied is allowed (TaskRouter showed it took)
    s.map.set(R2, itemOf(2, { intentN: 1, phase: 'failed', reservation_status: null }));
    const took = itemOf(2, { intentN: 1, phase: 'applied', reservation_status: 'accepted' });
    s.map.set(R2, took);
    assert.deepEqual(watcher.current(R2), took);
    watcher.close();
  });

  test('items of an unknown version are ignored, in the snapshot and in events', async () => {
    const s = setup();
    s.map.set(R1, { ...item({ phase: 'pending' }), v: 2 }, { silent: true });
    const watcher = await start(s);
    assert.equal(watcher.current(R1), undefined);
    s.map.set(R2, { ...itemOf(2, { phase: 'pending' }), v: 2 });
    assert.equal(watcher.current(R2), undefined);
    const known = itemOf(3, { intentN: 1, phase: 'pending' });
    s.map.set(R3, known);
    s.map.set(R3, { ...itemOf(3, { intentN: 9, phase: 'applied' }), v: 2 });
    assert.deepEqual(watcher.current(R3), known);
    s.map.set(R3, 'not an item');
    assert.deepEqual(watcher.current(R3), known);
    assert.deepEqual(s.changes, [[R3, known]]);
    watcher.close();
  });

  test('itemRemoved: current is undefined and onChange(sid, undefined)', async () => {
    const s = setup();
    const data = item({ phase: 'applied', reservation_status: 'completed', op: 'complete' });
    s.map.set(R1, data, { silent: true });
    const watcher = await start(s);
    s.map.remove(R1);
    assert.equal(watcher.current(R1), undefined);
    assert.equal(watcher.items().has(R1), false);
    assert.deepEqual(s.changes, [
      [R1, data],
      [R1, undefined],
    ]);
    // removing what was never there says nothing
    s.map.remove(R2);
    assert.equal(s.changes.length, 2);
    watcher.close();
  });

  test('a removal while the snapshot is read is not undone by the snapshot', async () => {
    const s = setup();
    s.map.set(R1, item({ phase: 'applied' }), { silent: true });
    s.map.duringRead = () => s.map.remove(R1);
    const watcher = await start(s);
    assert.equal(watcher.current(R1), undefined);
    assert.deepEqual(s.changes, []);
    watcher.close();
  });
});

describe('watchWorkerChannel: onChange', () => {
  test('is called once per actual change', async () => {
    const s = setup();
    const watcher = await start(s);
    const pending = item({ intentN: 1, phase: 'pending' });
    const applied = item({ intentN: 1, phase: 'applied', reservation_status: 'accepted' });
    const wrapping = item({ intentN: 1, phase: 'applied', reservation_status: 'wrapping', updatedAfterMs: 20_000 });
    s.map.set(R1, pending);
    s.map.set(R1, applied);
    s.map.set(R1, pending); // stale: no change
    s.map.set(R1, { ...applied, v: 2 }); // unknown version: no change
    s.map.set(R1, wrapping); // same phase, fresher status: a change
    assert.deepEqual(s.changes, [
      [R1, pending],
      [R1, applied],
      [R1, wrapping],
    ]);
    watcher.close();
  });

  test('an item that arrives both as an event during the read and in the snapshot is reported once', async () => {
    const s = setup();
    const pending = item({ intentN: 1, phase: 'pending' });
    // written just before the snapshot was taken; its event reaches the client during the read
    s.map.set(R1, pending, { silent: true });
    s.map.duringRead = () => {
      s.map.emit('itemAdded', { item: { key: R1, data: pending }, isLocal: false });
    };
    const watcher = await start(s);
    assert.deepEqual(watcher.current(R1), pending);
    assert.deepEqual(s.changes, [[R1, pending]]);
    watcher.close();
  });

  test('an onChange that throws goes to onError and does not stop the watcher', async () => {
    const s = setup();
    let calls = 0;
    const errors: unknown[] = [];
    const watcher = await watchWorkerChannel(
      s.client,
      WORKER_SID,
      () => {
        calls += 1;
        throw new Error('render failed');
      },
      { onError: (e) => errors.push(e) },
    );
    s.map.set(R1, item({ phase: 'pending' }));
    s.map.set(R2, itemOf(2, { phase: 'pending' }));
    assert.equal(calls, 2);
    assert.equal(errors.length, 2);
    assert.ok(watcher.current(R2));
    watcher.close();
  });
});

describe('watchWorkerChannel: tokens and reconnects', () => {
  test('tokenAboutToExpire: getToken is called and client.updateToken gets its result', async () => {
    const s = setup();
    let asked = 0;
    const watcher = await start(s, {
      getToken: async () => {
        asked += 1;
        return `token-${asked + 1}`;
      },
    });
    s.client.emit('tokenAboutToExpire', 180);
    await waitFor(() => s.client.tokens.length === 1, 'updateToken');
    assert.equal(asked, 1);
    assert.deepEqual(s.client.tokens, ['token-2']);
    s.client.emit('tokenExpired');
    await waitFor(() => s.client.tokens.length === 2, 'updateToken after tokenExpired');
    assert.deepEqual(s.client.tokens, ['token-2', 'token-3']);
    // the channel still works with the new token
    const data = item({ phase: 'pending' });
    s.map.set(R1, data);
    assert.deepEqual(watcher.current(R1), data);
    watcher.close();
  });

  test('a synchronous getToken works too; a failing one goes to onError', async () => {
    const s = setup();
    let fail = false;
    const watcher = await start(s, {
      getToken: () => {
        if (fail) throw new Error('no token');
        return 'token-sync';
      },
    });
    s.client.emit('tokenAboutToExpire', 180);
    await waitFor(() => s.client.tokens.length === 1, 'updateToken');
    assert.deepEqual(s.client.tokens, ['token-sync']);
    fail = true;
    s.client.emit('tokenExpired');
    await waitFor(() => s.errors.length === 1, 'onError');
    assert.match(String(s.errors[0]), /no token/);
    watcher.close();
  });

  test('without getToken the watcher leaves the token alone', async () => {
    const s = setup();
    const watcher = await start(s);
    s.client.emit('tokenAboutToExpire', 180);
    await flush();
    assert.deepEqual(s.client.tokens, []);
    watcher.close();
  });

  test('after disconnected → connected the snapshot is read again, and what was written meanwhile appears', async () => {
    const s = setup();
    const before = itemOf(1, { intentN: 1, phase: 'pending' });
    s.map.set(R1, before, { silent: true });
    const watcher = await start(s);
    assert.equal(s.map.getItemsCalls.length, 1);
    s.client.setConnectionState('disconnected');
    // the bridge settles R1 and announces R2 while this client cannot hear it
    const settled = itemOf(1, { intentN: 1, phase: 'applied', reservation_status: 'accepted' });
    const meanwhile = itemOf(2, { intentN: 2, op: 'reject', phase: 'pending' });
    s.map.set(R1, settled, { silent: true });
    s.map.set(R2, meanwhile, { silent: true });
    await flush();
    assert.equal(s.map.getItemsCalls.length, 1, 'no read while disconnected');
    s.client.setConnectionState('connecting');
    s.client.setConnectionState('connected');
    await waitFor(() => watcher.current(R2) !== undefined, 'the item written meanwhile');
    assert.equal(s.map.getItemsCalls.length, 2);
    assert.deepEqual(watcher.current(R1), settled);
    assert.deepEqual(watcher.current(R2), meanwhile);
    assert.ok(s.changes.some(([sid, data]) => sid === R2 && data?.intent_id === meanwhile.intent_id));
    watcher.close();
  });

  test('a re-read after a reconnect reports only what changed', async () => {
    const s = setup();
    const unchanged = itemOf(1, { intentN: 1, phase: 'applied', reservation_status: 'accepted' });
    s.map.set(R1, unchanged, { silent: true });
    const watcher = await start(s);
    s.changes.length = 0;
    s.client.setConnectionState('disconnected');
    const meanwhile = itemOf(2, { intentN: 2, phase: 'pending' });
    s.map.set(R2, meanwhile, { silent: true });
    s.client.setConnectionState('connected');
    await waitFor(() => s.map.getItemsCalls.length === 2 && watcher.current(R2) !== undefined, 're-read');
    await flush();
    assert.deepEqual(s.changes, [[R2, meanwhile]]);
    watcher.close();
  });

  test('a connected state without a drop before it does not re-read', async () => {
    const s = setup();
    const watcher = await start(s);
    s.client.setConnectionState('connected');
    await flush();
    assert.equal(s.map.getItemsCalls.length, 1);
    watcher.close();
  });

  test('a failing re-read goes to onError, and the next reconnect reads again', async () => {
    const s = setup();
    const watcher = await start(s);
    s.map.getItemsFailures.push(new Error('Sync hiccup'));
    s.client.setConnectionState('disconnected');
    s.client.setConnectionState('connected');
    await waitFor(() => s.errors.length === 1, 'onError');
    const later = item({ phase: 'pending' });
    s.map.set(R1, later, { silent: true });
    s.client.setConnectionState('disconnected');
    s.client.setConnectionState('connected');
    await waitFor(() => watcher.current(R1) !== undefined, 'the second re-read');
    watcher.close();
  });

  test('a reconnect during the first read asks for one more read after it', async () => {
    const s = setup();
    const gate = deferred();
    s.map.duringRead = async (call) => {
      if (call === 1) await gate.promise;
    };
    const started = start(s);
    await waitFor(() => s.map.getItemsCalls.length === 1, 'first read');
    s.client.setConnectionState('disconnected');
    const meanwhile = item({ phase: 'pending' });
    s.map.set(R1, meanwhile, { silent: true }); // after the first snapshot was taken
    s.client.setConnectionState('connected');
    gate.resolve();
    const watcher = await started;
    await waitFor(() => watcher.current(R1) !== undefined, 'the read after the reconnect');
    assert.equal(s.map.getItemsCalls.length, 2);
    watcher.close();
  });
});

describe('watchWorkerChannel: close', () => {
  test('removes its listeners, closes the map, and later events do nothing', async () => {
    const s = setup();
    const watcher = await start(s, { getToken: () => 'token-2' });
    const added = s.map.listeners('itemAdded');
    const removed = s.map.listeners('itemRemoved');
    assert.equal(added.length, 1);
    const known = item({ phase: 'pending' });
    s.map.set(R1, known);
    s.changes.length = 0;

    watcher.close();
    assert.equal(s.map.closed, true);
    assert.equal(s.map.listenerCount('itemAdded'), 0);
    assert.equal(s.map.listenerCount('itemUpdated'), 0);
    assert.equal(s.map.listenerCount('itemRemoved'), 0);
    assert.equal(s.client.listenerCount(), 0);

    s.map.set(R2, itemOf(2, { phase: 'pending' }));
    // even a listener the SDK still held on to does nothing
    added[0]?.({ item: { key: R3, data: itemOf(3, { phase: 'pending' }) } });
    removed[0]?.({ key: R1 });
    s.client.setConnectionState('disconnected');
    s.client.setConnectionState('connected');
    s.client.emit('tokenAboutToExpire', 10);
    await flush();
    assert.deepEqual(s.changes, []);
    assert.equal(watcher.current(R2), undefined);
    assert.equal(watcher.current(R3), undefined);
    assert.equal(s.map.getItemsCalls.length, 1);
    assert.deepEqual(s.client.tokens, []);
    watcher.close(); // twice is fine
  });
});
