import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { installFlexBridge } from '../../src/index.js';
import type { FlexBridgeHandle, FlexBridgeOptions, Intent, ReservationItem } from '../../src/index.js';
import { RESERVATION_SID, TASK_SID, WORKER_SID, item, reservationSid, taskSid } from '../support/fixtures.js';
import { FakeFlex, FakeManager, StandInSyncClient, fetchStub, json, networkError } from '../support/stand-ins.js';
import type { FakeTask, FetchHandler, FetchStub, InvokeResult, StandInSyncMap } from '../support/stand-ins.js';
import { deferred, flush, isSettled, waitFor } from '../support/wait.js';

const BASE = 'https://bridge.example.com';
const MAP_NAME = `flex-bridge.worker.${WORKER_SID}`;
const R1 = RESERVATION_SID;
const R2 = reservationSid(2);

const chatTask: FakeTask = { sid: R1, taskSid: TASK_SID, taskChannelUniqueName: 'chat' };
const voiceTask: FakeTask = { sid: R1, taskSid: TASK_SID, taskChannelUniqueName: 'voice' };

/** The intent the bridge answers with, for its own item `data`. */
function intentOf(data: ReservationItem): Intent {
  return {
    intent_id: data.intent_id,
    op: data.op,
    reservation_sid: data.reservation_sid,
    task_sid: data.task_sid,
    worker_sid: data.worker_sid,
    source: data.source,
    via: 'flex',
    state: data.phase === 'pending' ? 'instructed' : 'settled',
    phase: data.phase,
    outcome: data.phase === 'pending' ? null : data.phase,
    attempts: 1,
    reservation_status: data.reservation_status,
    error: data.error,
    created_at: data.requested_at,
    updated_at: data.updated_at,
  };
}

const appliedAccept = item({ intentN: 10, phase: 'applied', reservation_status: 'accepted', source: 'plugin' });
const answer200: FetchHandler = () => json(200, { intent: intentOf(appliedAccept) });

interface Rig {
  flex: FakeFlex;
  manager: FakeManager;
  sync: StandInSyncClient;
  map: StandInSyncMap;
  stub: FetchStub;
  notes: [string, string][];
  errors: unknown[];
  handle: FlexBridgeHandle;
  accept(task?: FakeTask | { sid: string }): Promise<InvokeResult>;
}

async function rig(
  setup: {
    handler?: FetchHandler;
    items?: ReservationItem[];
    options?: Partial<FlexBridgeOptions>;
    /** Leave options.syncClient out: the watcher uses manager.insightsClient. */
    insights?: boolean;
    before?: (sync: StandInSyncClient) => void;
  } = {},
): Promise<Rig> {
  const sync = new StandInSyncClient();
  const map = sync.mapFor(MAP_NAME);
  for (const data of setup.items ?? []) map.set(data.reservation_sid, data, { silent: true });
  setup.before?.(sync);
  const flex = new FakeFlex();
  const manager = new FakeManager({
    token: 'flex-token-1',
    workerSid: WORKER_SID,
    ...(setup.insights ? { insightsClient: sync } : {}),
  });
  const stub = fetchStub(setup.handler ?? answer200);
  const notes: [string, string][] = [];
  const errors: unknown[] = [];
  const options: FlexBridgeOptions = {
    baseUrl: BASE,
    fetch: stub.fetch,
    notify: (message, sid) => notes.push([message, sid]),
    onError: (error) => errors.push(error),
    maxWaitMs: 5_000,
    ...(setup.insights ? {} : { syncClient: sync }),
    ...setup.options,
  };
  const handle = await installFlexBridge(flex, manager, options);
  return {
    flex,
    manager,
    sync,
    map,
    stub,
    notes,
    errors,
    handle,
    accept: (task = chatTask) => flex.Actions.invokeAction('AcceptTask', 'taskSid' in task ? { task } : task),
  };
}

describe('installFlexBridge: the accept', () => {
  test('no item: the accept goes to the bridge, and Flex’s own accept is aborted', async () => {
    const r = await rig();
    const result = await r.accept();
    assert.deepEqual(result, { aborted: true, ran: false });
    assert.equal(r.stub.requests.length, 1);
    const [request] = r.stub.requests;
    assert.equal(request?.method, 'POST');
    assert.equal(request?.url, `${BASE}/flex/reservations/${R1}/accept?wait=5`);
    assert.equal(request?.headers['authorization'], 'Bearer flex-token-1');
    assert.deepEqual(request?.json, { task_sid: TASK_SID });
    assert.deepEqual(r.notes, []);
    assert.deepEqual(r.flex.Actions.performed, []);
    r.handle.close();
  });

  test('acceptWaitSeconds sets ?wait; a 202 (still accepting) also aborts Flex’s accept', async () => {
    const pending = item({ intentN: 10, phase: 'pending' });
    const r = await rig({
      options: { acceptWaitSeconds: 2 },
      handler: () =>
        json(202, { intent: intentOf(pending), intent_id: pending.intent_id, status_url: `/flex/intents/${pending.intent_id}` }),
    });
    const result = await r.accept();
    assert.equal(result.aborted, true);
    assert.equal(r.stub.requests[0]?.url, `${BASE}/flex/reservations/${R1}/accept?wait=2`);
    assert.deepEqual(r.notes, []);
    r.handle.close();
  });

  test('item pending: the guard waits, and when the item settles accepted it aborts without the bridge', async () => {
    const pending = item({ intentN: 1, phase: 'pending', source: 'policy' });
    const r = await rig({ items: [pending] });
    assert.equal(r.handle.decision(R1), 'wait');
    const invoked = r.accept();
    assert.equal(await isSettled(invoked), false, 'waits while the bridge acts');
    assert.equal(r.stub.requests.length, 0);
    r.map.set(R1, item({ intentN: 1, phase: 'applied', reservation_status: 'accepted', source: 'policy' }));
    const result = await invoked;
    assert.deepEqual(result, { aborted: true, ran: false });
    assert.equal(r.stub.requests.length, 0);
    assert.deepEqual(r.notes, []);
    r.handle.close();
  });

  test('item pending, then failed with the reservation still pending: the accept goes to the bridge', async () => {
    const r = await rig({ items: [item({ intentN: 1, phase: 'pending', source: 'policy' })] });
    const invoked = r.accept();
    assert.equal(await isSettled(invoked), false);
    r.map.set(
      R1,
      item({
        intentN: 1,
        phase: 'failed',
        source: 'policy',
        reservation_status: 'pending',
        error: { code: 503, message: 'TaskRouter is unavailable; try again' },
      }),
    );
    const result = await invoked;
    assert.equal(result.aborted, true);
    assert.equal(r.stub.requests.length, 1);
    assert.equal(r.stub.requests[0]?.url, `${BASE}/flex/reservations/${R1}/accept?wait=5`);
    r.handle.close();
  });

  test('gone: abort, and tell the agent the item’s error message', async () => {
    const message = 'The reservation timed out before it could be accepted';
    const r = await rig({
      items: [
        item({ phase: 'failed', source: 'taskrouter', reservation_status: 'timeout', error: { code: 20001, message } }),
      ],
    });
    assert.equal(r.handle.decision(R1), 'gone');
    const result = await r.accept();
    assert.deepEqual(result, { aborted: true, ran: false });
    assert.deepEqual(r.notes, [[message, R1]]);
    assert.equal(r.stub.requests.length, 0);
    r.handle.close();
  });

  test('gone while the guard waits: abort and tell the agent', async () => {
    const r = await rig({ items: [item({ intentN: 1, phase: 'pending', source: 'policy' })] });
    const invoked = r.accept();
    await flush();
    const message = 'The reservation was canceled';
    r.map.set(
      R1,
      item({ intentN: 1, phase: 'failed', source: 'policy', reservation_status: 'canceled', error: { code: null, message } }),
    );
    assert.equal((await invoked).aborted, true);
    assert.deepEqual(r.notes, [[message, R1]]);
    assert.equal(r.stub.requests.length, 0);
    r.handle.close();
  });

  test('accepted: abort, no request, nothing to tell', async () => {
    const r = await rig({ items: [item({ phase: 'applied', reservation_status: 'accepted', source: 'policy' })] });
    const result = await r.accept();
    assert.deepEqual(result, { aborted: true, ran: false });
    assert.equal(r.stub.requests.length, 0);
    assert.deepEqual(r.notes, []);
    r.handle.close();
  });

  test('a payload with only { sid } is guarded too', async () => {
    const r = await rig({ items: [item({ phase: 'applied', reservation_status: 'wrapping', op: 'wrapup', source: 'policy' })] });
    const result = await r.accept({ sid: R1 });
    assert.equal(result.aborted, true);
    assert.equal(r.stub.requests.length, 0);
    r.handle.close();
  });

  test('a 409 from the bridge: abort, and tell the agent its message', async () => {
    const message = 'The reservation timed out before it could be accepted (reservation is timeout)';
    const failed = item({
      intentN: 10,
      phase: 'failed',
      reservation_status: 'timeout',
      error: { code: 20001, message: 'The reservation timed out before it could be accepted' },
    });
    const r = await rig({ handler: () => json(409, { intent: intentOf(failed), error: { code: 20001, message } }) });
    const result = await r.accept();
    assert.deepEqual(result, { aborted: true, ran: false });
    assert.deepEqual(r.notes, [[message, R1]]);
    assert.equal(r.stub.requests.length, 1, 'not retried');
    r.handle.close();
  });

  test('a 409 because another intent is in flight: abort (the channel will show the bridge acting)', async () => {
    const r = await rig({
      handler: () => json(409, { error: { code: 'intent_in_flight', message: 'a reject is in flight for this reservation' } }),
    });
    const result = await r.accept();
    assert.deepEqual(result, { aborted: true, ran: false });
    assert.equal(r.stub.requests.length, 1, 'not retried');
    r.handle.close();
  });

  test('another refusal (403): abort, and tell the agent', async () => {
    const message = 'this reservation belongs to another worker';
    const r = await rig({ handler: () => json(403, { error: { code: 'forbidden', message } }) });
    assert.deepEqual(await r.accept(), { aborted: true, ran: false });
    assert.deepEqual(r.notes, [[message, R1]]);
    r.handle.close();
  });

  test('maxWaitMs passes while the item stays pending: abort and tell the agent', async () => {
    const r = await rig({ items: [item({ phase: 'pending', source: 'policy' })], options: { maxWaitMs: 20 } });
    const result = await r.accept();
    assert.deepEqual(result, { aborted: true, ran: false });
    assert.equal(r.notes.length, 1);
    assert.equal(r.notes[0]?.[1], R1);
    assert.equal(r.stub.requests.length, 0);
    r.handle.close();
  });
});

describe('installFlexBridge: when the bridge cannot be reached', () => {
  test("whenBridgeUnreachable 'flex' (the default): Flex's own accept runs", async () => {
    const r = await rig({ handler: () => Promise.reject(networkError()) });
    const result = await r.accept();
    assert.deepEqual(result, { aborted: false, ran: true });
    assert.equal(r.stub.requests.length, 1);
    assert.equal(r.flex.Actions.performed.length, 1);
    r.handle.close();
  });

  test("whenBridgeUnreachable 'refuse': aborted, and the agent is told", async () => {
    const r = await rig({
      handler: () => Promise.reject(networkError()),
      options: { whenBridgeUnreachable: 'refuse' },
    });
    const result = await r.accept();
    assert.deepEqual(result, { aborted: true, ran: false });
    assert.equal(r.notes.length, 1);
    assert.equal(r.notes[0]?.[1], R1);
    r.handle.close();
  });

  test('unreachable, but meanwhile the channel shows the bridge accepting: aborted (the bridge owns it)', async () => {
    let map: StandInSyncMap | undefined;
    const r = await rig({
      handler: () => {
        // the request reached the bridge, which announced the accept, but the answer was lost
        map?.set(R1, item({ intentN: 10, phase: 'pending', source: 'plugin' }));
        return Promise.reject(networkError());
      },
    });
    map = r.map;
    const result = await r.accept();
    assert.deepEqual(result, { aborted: true, ran: false });
    assert.deepEqual(r.flex.Actions.performed, []);
    r.handle.close();
  });

  test('a timeout is unreachable too', async () => {
    const r = await rig({
      handler: (request) =>
        new Promise((_resolve, reject) =>
          request.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))),
        ),
      options: { timeoutMs: 10, acceptWaitSeconds: 0 },
    });
    const result = await r.accept();
    assert.deepEqual(result, { aborted: false, ran: true });
    r.handle.close();
  });
});

describe('installFlexBridge: voice', () => {
  test('a voice task is not routed to the bridge: Flex’s own accept runs', async () => {
    const r = await rig();
    const result = await r.accept(voiceTask);
    assert.deepEqual(result, { aborted: false, ran: true });
    assert.equal(r.stub.requests.length, 0);
    r.handle.close();
  });

  test('a voice task is still guarded: it waits for a ringing conference and never accepts twice', async () => {
    const ringing = item({ intentN: 1, op: 'conference', phase: 'pending', source: 'policy' });
    const r = await rig({ items: [ringing] });
    const invoked = r.accept(voiceTask);
    assert.equal(await isSettled(invoked), false);
    r.map.set(R1, item({ intentN: 1, op: 'conference', phase: 'applied', reservation_status: 'accepted', source: 'policy' }));
    assert.deepEqual(await invoked, { aborted: true, ran: false });
    assert.equal(r.stub.requests.length, 0);
    r.handle.close();
  });

  test('routeAccept decides which tasks go to the bridge', async () => {
    const r = await rig({ options: { routeAccept: (task) => task?.taskChannelUniqueName === 'voice' } });
    assert.deepEqual(await r.accept({ ...chatTask, sid: R2, taskSid: taskSid(2) }), { aborted: false, ran: true });
    assert.equal(r.stub.requests.length, 0);
    assert.equal((await r.accept(voiceTask)).aborted, true);
    assert.equal(r.stub.requests.length, 1);
    r.handle.close();
  });
});

describe('installFlexBridge: what the handle says', () => {
  test("indication is 'accepting…' while the bridge request is in flight, and undefined after", async () => {
    const answer = deferred<Response>();
    const r = await rig({ handler: () => answer.promise });
    const seen: string[] = [];
    r.handle.subscribe((sid) => seen.push(sid));
    assert.equal(r.handle.indication(R1), undefined);
    const invoked = r.accept();
    await waitFor(() => r.stub.requests.length === 1, 'the bridge request');
    assert.equal(r.handle.indication(R1), 'accepting…');
    assert.ok(seen.includes(R1), 'subscribers hear that the indication changed');
    const before = seen.length;
    answer.resolve(json(200, { intent: intentOf(appliedAccept) }));
    assert.equal((await invoked).aborted, true);
    assert.equal(r.handle.indication(R1), undefined);
    assert.ok(seen.length > before, 'and that it changed back');
    r.handle.close();
  });

  test('indication, decision and current follow the channel', async () => {
    const r = await rig();
    const pending = item({ intentN: 1, phase: 'pending', op: 'accept', source: 'policy' });
    r.map.set(R1, pending);
    assert.equal(r.handle.indication(R1), 'accepting…');
    assert.equal(r.handle.decision(R1), 'wait');
    assert.deepEqual(r.handle.current(R1), pending);
    r.map.set(R1, item({ intentN: 1, phase: 'applied', reservation_status: 'accepted', source: 'policy' }));
    assert.equal(r.handle.indication(R1), undefined);
    assert.equal(r.handle.decision(R1), 'accepted');
    assert.equal(r.handle.decision(R2), 'accept');
    r.handle.close();
  });

  test('subscribe: listeners hear channel changes until they unsubscribe', async () => {
    const r = await rig();
    const seen: string[] = [];
    const unsubscribe = r.handle.subscribe((sid) => seen.push(sid));
    r.map.set(R2, item({ reservation_sid: R2, task_sid: taskSid(2), phase: 'pending', op: 'reject', source: 'timeout' }));
    assert.deepEqual(seen, [R2]);
    unsubscribe();
    r.map.set(R1, item({ phase: 'pending' }));
    assert.deepEqual(seen, [R2]);
    r.handle.close();
  });

  test('items already on the channel when it opens are readable at once', async () => {
    const r = await rig({ items: [item({ phase: 'pending', source: 'recovery' })] });
    assert.equal(r.handle.decision(R1), 'wait');
    assert.ok(r.handle.watcher);
    r.handle.close();
  });
});

describe('installFlexBridge: tokens', () => {
  test('tokenUpdated: the sync client it was given gets the token, and the next request uses it', async () => {
    const r = await rig();
    await r.accept();
    r.manager.refreshToken('flex-token-2');
    await waitFor(() => r.sync.tokens.length === 1, 'syncClient.updateToken');
    assert.deepEqual(r.sync.tokens, ['flex-token-2']);
    await r.accept({ ...chatTask, sid: R2, taskSid: taskSid(2) });
    assert.deepEqual(
      r.stub.requests.map((request) => request.headers['authorization']),
      ['Bearer flex-token-1', 'Bearer flex-token-2'],
    );
    r.handle.close();
  });

  test('tokenUpdated: Flex’s own insightsClient is left to Flex', async () => {
    const r = await rig({ insights: true });
    r.manager.refreshToken('flex-token-2');
    await flush();
    assert.deepEqual(r.sync.tokens, []);
    await r.accept();
    assert.equal(r.stub.requests[0]?.headers['authorization'], 'Bearer flex-token-2');
    r.handle.close();
  });

  test('a 401 is retried once with the current token', async () => {
    let manager: FakeManager | undefined;
    const r = await rig({
      handler: (request, index) => {
        if (index > 0) return answer200(request, index);
        manager?.refreshToken('flex-token-2'); // Flex refreshed the token while the request was out
        return json(401, { error: { code: 'invalid_token', message: 'expired' } });
      },
    });
    manager = r.manager;
    assert.equal((await r.accept()).aborted, true);
    assert.deepEqual(
      r.stub.requests.map((request) => request.headers['authorization']),
      ['Bearer flex-token-1', 'Bearer flex-token-2'],
    );
    assert.deepEqual(r.notes, []);
    r.handle.close();
  });
});

describe('installFlexBridge: setup and close', () => {
  test('close() removes the action and token listeners and closes the channel', async () => {
    const r = await rig();
    assert.equal(r.flex.Actions.listenerCount('beforeAcceptTask'), 1);
    assert.equal(r.manager.events.listenerCount('tokenUpdated'), 1);
    r.handle.close();
    assert.equal(r.flex.Actions.listenerCount('beforeAcceptTask'), 0);
    assert.equal(r.manager.events.listenerCount('tokenUpdated'), 0);
    assert.equal(r.map.closed, true);
    assert.equal(r.map.listenerCount(), 0);
    assert.equal(r.sync.listenerCount(), 0);
    const result = await r.accept();
    assert.deepEqual(result, { aborted: false, ran: true });
    assert.equal(r.stub.requests.length, 0);
    r.manager.refreshToken('flex-token-2');
    assert.deepEqual(r.sync.tokens, []);
    r.handle.close(); // twice is fine
  });

  test('close() releases a guard that is waiting for the bridge, instead of holding Flex for maxWaitMs', async () => {
    const r = await rig({ items: [item({ phase: 'pending', source: 'policy' })], options: { maxWaitMs: 2_000 } });
    const invoked = r.accept();
    assert.equal(await isSettled(invoked), false);
    r.handle.close();
    const releasedAtOnce = await isSettled(invoked);
    await invoked;
    assert.equal(releasedAtOnce, true, 'the guard kept waiting after close()');
    assert.equal(r.stub.requests.length, 0);
  });

  test('the channel failing to open: the guard still routes accepts to the bridge, and the channel opens later', async () => {
    const r = await rig({ before: (sync) => sync.mapFailures.push(new Error('Sync is down')) });
    assert.equal(r.handle.watcher, undefined);
    assert.equal(r.errors.length, 1);
    assert.equal((await r.accept()).aborted, true);
    assert.equal(r.stub.requests.length, 1);
    await waitFor(() => r.handle.watcher !== undefined, 'the retry', 10_000);
    assert.equal(r.sync.listenerCount('connectionStateChanged'), 1, 'one watcher listening to the client');
    r.map.set(R2, item({ reservation_sid: R2, task_sid: taskSid(2), phase: 'pending' }));
    assert.equal(r.handle.decision(R2), 'wait');
    r.handle.close();
  });

  test('a manager without a worker, or no Sync client at all, is refused', async () => {
    const flex = new FakeFlex();
    const sync = new StandInSyncClient();
    const noWorker = { user: { token: 't' }, workerClient: undefined };
    await assert.rejects(installFlexBridge(flex, noWorker, { baseUrl: BASE, syncClient: sync }), TypeError);
    const noSync = new FakeManager({ token: 't', workerSid: WORKER_SID });
    await assert.rejects(installFlexBridge(flex, noSync, { baseUrl: BASE }), TypeError);
    assert.equal(flex.Actions.listenerCount('beforeAcceptTask'), 0);
  });
});
