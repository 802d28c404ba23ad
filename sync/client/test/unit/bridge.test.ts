import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  BadGatewayError,
  BadRequestError,
  BridgeError,
  BridgeTimeoutError,
  BridgeUnreachableError,
  ConflictError,
  ForbiddenError,
  NotFoundError,
  PayloadTooLargeError,
  UnauthorizedError,
  UnavailableError,
  UnprocessableError,
  UnsupportedMediaTypeError,
  createBridgeClient,
} from '../../src/index.js';
import type { BridgeClient, Intent } from '../../src/index.js';
import { RESERVATION_SID, TASK_SID, WORKER_SID, intentId } from '../support/fixtures.js';
import { fetchStub, hang, html, json, networkError } from '../support/stand-ins.js';
import type { FetchHandler, FetchStub } from '../support/stand-ins.js';
import { isSettled, waitFor } from '../support/wait.js';

const BASE = 'https://bridge.example.com';
const INTENT_ID = intentId(7);

/** An intent as the bridge's `Intent.to_json()` renders it. */
function intent(overrides: Partial<Intent> = {}): Intent {
  return {
    intent_id: INTENT_ID,
    op: 'accept',
    reservation_sid: RESERVATION_SID,
    task_sid: TASK_SID,
    worker_sid: WORKER_SID,
    source: 'plugin',
    via: 'flex',
    state: 'settled',
    phase: 'applied',
    outcome: 'applied',
    attempts: 1,
    reservation_status: 'accepted',
    error: null,
    created_at: '2024-05-01T12:34:56.789Z',
    updated_at: '2024-05-01T12:34:57.102Z',
    ...overrides,
  };
}

function client(
  handler: FetchHandler,
  options: { baseUrl?: string; tokens?: string[]; timeoutMs?: number } = {},
): { bridge: BridgeClient; stub: FetchStub; tokenCalls: () => number } {
  const stub = fetchStub(handler);
  const tokens = options.tokens ?? ['flex-token-1'];
  let calls = 0;
  const bridge = createBridgeClient({
    baseUrl: options.baseUrl ?? BASE,
    getToken: async () => {
      const token = tokens[Math.min(calls, tokens.length - 1)] ?? '';
      calls += 1;
      return token;
    },
    fetch: stub.fetch,
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
  return { bridge, stub, tokenCalls: () => calls };
}

describe('createBridgeClient: requests', () => {
  test('accept: POST /flex/reservations/<WR>/accept?wait=, bearer token, JSON body with task_sid', async () => {
    const { bridge, stub } = client(() => json(200, { intent: intent() }));
    await bridge.accept(RESERVATION_SID, TASK_SID, { wait: 5 });
    assert.equal(stub.requests.length, 1);
    const [request] = stub.requests;
    assert.ok(request);
    assert.equal(request.method, 'POST');
    assert.equal(request.url, `${BASE}/flex/reservations/${RESERVATION_SID}/accept?wait=5`);
    assert.equal(request.headers['authorization'], 'Bearer flex-token-1');
    assert.equal(request.headers['content-type'], 'application/json');
    assert.deepEqual(request.json, { task_sid: TASK_SID });
  });

  test('without a wait there is no ?wait (the bridge default applies)', async () => {
    const { bridge, stub } = client(() => json(200, { intent: intent() }));
    await bridge.accept(RESERVATION_SID, TASK_SID);
    assert.equal(stub.requests[0]?.url, `${BASE}/flex/reservations/${RESERVATION_SID}/accept`);
  });

  test('ops with parameters send {task_sid, ...params}', async () => {
    const { bridge, stub } = client((request) => {
      const op = request.url.split('/').pop()?.split('?')[0];
      return json(202, {
        intent: intent({ op: op as Intent['op'], state: 'announced', phase: 'pending', reservation_status: null }),
        intent_id: INTENT_ID,
        status_url: `/flex/intents/${INTENT_ID}`,
      });
    });
    const activity = 'WA0123456789abcdef0123456789abcdef';
    await bridge.reject(RESERVATION_SID, TASK_SID, { activity_sid: activity });
    await bridge.conference(RESERVATION_SID, TASK_SID, { from: '+15017122661', timeout: 20, record: true }, { wait: 0 });
    await bridge.redirect(RESERVATION_SID, TASK_SID, {
      call_sid: 'CA0123456789abcdef0123456789abcdef',
      url: 'https://example.com/twiml',
      accept: true,
    });
    await bridge.wrapup(RESERVATION_SID, TASK_SID);
    await bridge.complete(RESERVATION_SID, TASK_SID, {});
    await bridge.act('dequeue', RESERVATION_SID, { task_sid: TASK_SID, post_work_activity_sid: activity }, { wait: 30 });
    await bridge.call(RESERVATION_SID, TASK_SID, { from: '+15017122661', url: 'https://example.com/call' });
    const seen = stub.requests.map((r) => [r.method, r.url.slice(BASE.length), r.json]);
    const path = `/flex/reservations/${RESERVATION_SID}`;
    assert.deepEqual(seen, [
      ['POST', `${path}/reject`, { task_sid: TASK_SID, activity_sid: activity }],
      ['POST', `${path}/conference?wait=0`, { task_sid: TASK_SID, from: '+15017122661', timeout: 20, record: true }],
      [
        'POST',
        `${path}/redirect`,
        { task_sid: TASK_SID, call_sid: 'CA0123456789abcdef0123456789abcdef', url: 'https://example.com/twiml', accept: true },
      ],
      ['POST', `${path}/wrapup`, { task_sid: TASK_SID }],
      ['POST', `${path}/complete`, { task_sid: TASK_SID }],
      ['POST', `${path}/dequeue?wait=30`, { task_sid: TASK_SID, post_work_activity_sid: activity }],
      ['POST', `${path}/call`, { task_sid: TASK_SID, from: '+15017122661', url: 'https://example.com/call' }],
    ]);
    for (const request of stub.requests) {
      assert.equal(request.headers['content-type'], 'application/json');
      assert.equal(request.headers['authorization'], 'Bearer flex-token-1');
    }
  });

  test('the token is asked for on every request', async () => {
    const { bridge, stub, tokenCalls } = client(() => json(200, { intent: intent() }), {
      tokens: ['flex-token-1', 'flex-token-2'],
    });
    await bridge.accept(RESERVATION_SID, TASK_SID);
    await bridge.accept(RESERVATION_SID, TASK_SID);
    assert.equal(tokenCalls(), 2);
    assert.deepEqual(
      stub.requests.map((r) => r.headers['authorization']),
      ['Bearer flex-token-1', 'Bearer flex-token-2'],
    );
  });

  test('intent(): GET /flex/intents/<id>, no body, the intent back', async () => {
    const pending = intent({ state: 'instructed', phase: 'pending', outcome: null, reservation_status: null });
    const { bridge, stub } = client(() => json(200, { intent: pending }));
    assert.deepEqual(await bridge.intent(INTENT_ID), pending);
    const [request] = stub.requests;
    assert.equal(request?.method, 'GET');
    assert.equal(request?.url, `${BASE}/flex/intents/${INTENT_ID}`);
    assert.equal(request?.body, undefined);
    assert.equal(request?.headers['content-type'], undefined);
    assert.equal(request?.headers['authorization'], 'Bearer flex-token-1');
  });

  test('patchTaskAttributes: PATCH with application/merge-patch+json, the result back', async () => {
    const answer = { attributes: { customer: { tier: 'gold' }, channel: 'chat' }, etag: '"b7f3"', changed: true };
    const { bridge, stub } = client(() => json(200, answer));
    const patch = { customer: { tier: 'gold' }, stale: null };
    assert.deepEqual(await bridge.patchTaskAttributes(TASK_SID, patch), answer);
    const [request] = stub.requests;
    assert.equal(request?.method, 'PATCH');
    assert.equal(request?.url, `${BASE}/flex/tasks/${TASK_SID}/attributes`);
    assert.equal(request?.headers['content-type'], 'application/merge-patch+json');
    assert.equal(request?.headers['authorization'], 'Bearer flex-token-1');
    assert.deepEqual(request?.json, patch);
  });

  test('patchTaskAttributes with replaceMalformed: ?replace_malformed=true', async () => {
    const { bridge, stub } = client(() => json(200, { attributes: { a: 1 }, etag: null, changed: true }));
    const result = await bridge.patchTaskAttributes(TASK_SID, { a: 1 }, { replaceMalformed: true });
    assert.equal(stub.requests[0]?.url, `${BASE}/flex/tasks/${TASK_SID}/attributes?replace_malformed=true`);
    assert.equal(result.etag, null);
    await bridge.patchTaskAttributes(TASK_SID, { a: 1 }, { replaceMalformed: false });
    assert.equal(stub.requests[1]?.url, `${BASE}/flex/tasks/${TASK_SID}/attributes`);
  });

  test('baseUrl: trailing slashes are dropped, a path prefix is kept', async () => {
    for (const [baseUrl, prefix] of [
      ['https://bridge.example.com/', 'https://bridge.example.com'],
      ['https://bridge.example.com//', 'https://bridge.example.com'],
      ['http://localhost:8080/', 'http://localhost:8080'],
      ['https://example.com/bridge/', 'https://example.com/bridge'],
    ] as const) {
      const { bridge, stub } = client(() => json(200, { intent: intent() }), { baseUrl });
      await bridge.accept(RESERVATION_SID, TASK_SID);
      assert.equal(stub.requests[0]?.url, `${prefix}/flex/reservations/${RESERVATION_SID}/accept`, baseUrl);
    }
  });

  test('a baseUrl that is not http(s) throws', () => {
    for (const baseUrl of ['ftp://bridge.example.com', 'bridge.example.com', '/flex', '', 'javascript:alert(1)']) {
      assert.throws(
        () => createBridgeClient({ baseUrl, getToken: () => 't', fetch: fetchStub(() => json(200, {})).fetch }),
        TypeError,
        baseUrl,
      );
    }
  });
});

describe('createBridgeClient: answers', () => {
  test('200: settled, with the intent', async () => {
    const applied = intent();
    const { bridge } = client(() => json(200, { intent: applied }));
    const result = await bridge.accept(RESERVATION_SID, TASK_SID, { wait: 5 });
    assert.equal(result.status, 200);
    assert.equal(result.settled, true);
    assert.deepEqual(result.intent, applied);
    assert.equal(result.intentId, INTENT_ID);
    assert.equal(result.statusUrl, undefined);
  });

  test('202: not settled, with the intent id and the status URL', async () => {
    const inFlight = intent({ state: 'instructed', phase: 'pending', outcome: null, reservation_status: null });
    const { bridge } = client(() =>
      json(202, { intent: inFlight, intent_id: INTENT_ID, status_url: `/flex/intents/${INTENT_ID}` }),
    );
    const result = await bridge.accept(RESERVATION_SID, TASK_SID, { wait: 0 });
    assert.equal(result.status, 202);
    assert.equal(result.settled, false);
    assert.equal(result.intentId, INTENT_ID);
    assert.equal(result.statusUrl, `/flex/intents/${INTENT_ID}`);
    assert.deepEqual(result.intent, inFlight);
  });

  const TABLE: [number, new (...args: never[]) => BridgeError, string | number | null, string][] = [
    [400, BadRequestError, 'invalid_params', "body: Additional properties are not allowed ('colour' was unexpected)"],
    [403, ForbiddenError, 'forbidden', 'this reservation belongs to another worker'],
    [404, NotFoundError, 20404, 'The requested resource was not found'],
    [409, ConflictError, 'intent_in_flight', 'a reject is in flight for this reservation'],
    [413, PayloadTooLargeError, 'patch_too_large', 'the patch is over 65536 bytes'],
    [415, UnsupportedMediaTypeError, 'unsupported_media_type', 'send the patch as application/merge-patch+json'],
    [422, UnprocessableError, 20001, 'Instruction is not valid for this task'],
    [502, BadGatewayError, 20003, 'Authenticate'],
    [503, UnavailableError, 20503, 'Service unavailable'],
    [503, UnavailableError, null, 'Sync is unavailable and the strict policy is on'],
  ];
  for (const [status, ErrorClass, code, message] of TABLE) {
    test(`${status} → ${ErrorClass.name} with the code and message of the body (code ${String(code)})`, async () => {
      const { bridge, stub } = client(() => json(status, { error: { code, message } }));
      const error = await bridge.accept(RESERVATION_SID, TASK_SID).then(
        () => assert.fail('resolved'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof ErrorClass, String(error));
      assert.ok(error instanceof BridgeError);
      assert.ok(!(error instanceof BridgeUnreachableError));
      assert.equal(error.status, status);
      assert.equal(error.code, code);
      assert.equal(error.message, message);
      assert.equal(stub.requests.length, 1, 'not retried');
    });
  }

  test('409 for a settled, failed intent: ConflictError carrying the intent', async () => {
    const failed = intent({
      phase: 'failed',
      outcome: 'failed',
      reservation_status: 'timeout',
      error: { code: 20001, message: 'The reservation timed out before it could be accepted' },
    });
    const { bridge } = client(() =>
      json(409, {
        intent: failed,
        error: { code: 20001, message: 'The reservation timed out before it could be accepted (reservation is timeout)' },
      }),
    );
    await assert.rejects(bridge.accept(RESERVATION_SID, TASK_SID, { wait: 5 }), (error: unknown) => {
      assert.ok(error instanceof ConflictError);
      assert.deepEqual(error.intent, failed);
      assert.equal(error.code, 20001);
      assert.match(error.message, /timed out/);
      return true;
    });
  });

  test('401: retried exactly once, with the token asked for again; then UnauthorizedError', async () => {
    const { bridge, stub, tokenCalls } = client(
      () => json(401, { error: { code: 'invalid_token', message: 'the Flex token is expired' } }),
      { tokens: ['old-token', 'new-token', 'third-token'] },
    );
    await assert.rejects(bridge.accept(RESERVATION_SID, TASK_SID), (error: unknown) => {
      assert.ok(error instanceof UnauthorizedError);
      assert.equal(error.status, 401);
      assert.equal(error.code, 'invalid_token');
      assert.equal(error.message, 'the Flex token is expired');
      return true;
    });
    assert.equal(stub.requests.length, 2);
    assert.equal(tokenCalls(), 2);
    assert.deepEqual(
      stub.requests.map((r) => r.headers['authorization']),
      ['Bearer old-token', 'Bearer new-token'],
    );
    assert.deepEqual(stub.requests[0]?.json, stub.requests[1]?.json);
  });

  test('401 then 200: the retry with the fresh token succeeds', async () => {
    const { bridge, stub } = client(
      (_request, index) =>
        index === 0 ? json(401, { error: { code: 'missing_token', message: 'no token' } }) : json(200, { intent: intent() }),
      { tokens: ['old-token', 'new-token'] },
    );
    const result = await bridge.accept(RESERVATION_SID, TASK_SID);
    assert.equal(result.settled, true);
    assert.equal(stub.requests.length, 2);
    assert.equal(stub.requests[1]?.headers['authorization'], 'Bearer new-token');
  });

  test('an error body without the documented shape still maps to the class of its status', async () => {
    const { bridge } = client(() => json(403, { detail: 'nope' }));
    await assert.rejects(bridge.intent(INTENT_ID), (error: unknown) => {
      assert.ok(error instanceof ForbiddenError);
      assert.equal(error.code, null);
      assert.ok(error.message.length > 0);
      return true;
    });
  });
});

describe('createBridgeClient: no answer', () => {
  test('fetch rejects (connection refused, CORS): BridgeUnreachableError', async () => {
    const { bridge } = client(() => Promise.reject(networkError()));
    await assert.rejects(bridge.accept(RESERVATION_SID, TASK_SID), (error: unknown) => {
      assert.ok(error instanceof BridgeUnreachableError);
      assert.ok(!(error instanceof BridgeTimeoutError));
      assert.equal(error.status, undefined);
      return true;
    });
  });

  test('no answer within timeoutMs: BridgeTimeoutError, a BridgeUnreachableError, and the request is aborted', async () => {
    const { bridge, stub } = client(hang, { timeoutMs: 20 });
    await assert.rejects(bridge.intent(INTENT_ID), (error: unknown) => {
      assert.ok(error instanceof BridgeTimeoutError);
      assert.ok(error instanceof BridgeUnreachableError);
      return true;
    });
    assert.equal(stub.requests[0]?.signal?.aborted, true);
  });

  test('an action with ?wait=0 times out as well', async () => {
    const { bridge } = client(hang, { timeoutMs: 20 });
    await assert.rejects(bridge.accept(RESERVATION_SID, TASK_SID, { wait: 0 }), BridgeTimeoutError);
  });

  test("a proxy's HTML 502/503/504: BridgeUnreachableError, not the bridge's own error", async () => {
    for (const status of [502, 503, 504]) {
      const { bridge } = client(() => html(status));
      await assert.rejects(bridge.accept(RESERVATION_SID, TASK_SID), (error: unknown) => {
        assert.ok(error instanceof BridgeUnreachableError, `${status}: ${String(error)}`);
        assert.ok(!(error instanceof BadGatewayError));
        assert.equal(error.status, status);
        return true;
      });
    }
  });

  test("the bridge's own JSON 502 is a BadGatewayError, not unreachable", async () => {
    const { bridge } = client(() => json(502, { error: { code: 20003, message: 'Authenticate' } }));
    await assert.rejects(bridge.accept(RESERVATION_SID, TASK_SID), (error: unknown) => {
      assert.ok(error instanceof BadGatewayError);
      assert.ok(!(error instanceof BridgeUnreachableError));
      return true;
    });
  });

  test("a caller's abort while the request is out rejects it, without calling the bridge unreachable", async () => {
    const { bridge, stub } = client(hang, { timeoutMs: 300 });
    const controller = new AbortController();
    const pending = bridge.intent(INTENT_ID, { signal: controller.signal });
    await waitFor(() => stub.requests.length === 1, 'the request');
    controller.abort();
    assert.equal(await isSettled(pending), true, 'rejects on the abort, not on the timeout');
    await assert.rejects(pending, (error: unknown) => {
      assert.ok(!(error instanceof BridgeUnreachableError), String(error));
      return true;
    });
    assert.equal(stub.requests[0]?.signal?.aborted, true);
  });

  test("a caller's signal that is already aborted rejects at once and sends nothing", async () => {
    const { bridge, stub } = client(hang, { timeoutMs: 300 });
    const controller = new AbortController();
    controller.abort();
    const pending = bridge.intent(INTENT_ID, { signal: controller.signal });
    const settledAtOnce = await isSettled(pending);
    const sent = stub.requests.filter((r) => r.signal?.aborted !== true).length;
    await pending.catch(() => undefined); // let it finish either way
    assert.equal(settledAtOnce, true, 'the request waited for its timeout instead of the abort');
    assert.equal(sent, 0, 'a request went out with a live signal');
  });

  test("a caller's abort while the token is being read is not lost", async () => {
    const stub = fetchStub(hang);
    const controller = new AbortController();
    const bridge = createBridgeClient({
      baseUrl: BASE,
      getToken: async () => {
        controller.abort(); // e.g. the agent closed the task while Flex refreshed the token
        return 'flex-token-1';
      },
      fetch: stub.fetch,
      timeoutMs: 300,
    });
    const pending = bridge.intent(INTENT_ID, { signal: controller.signal });
    const settledAtOnce = await isSettled(pending);
    await pending.catch(() => undefined);
    assert.equal(settledAtOnce, true, 'the request waited for its timeout instead of the abort');
  });
});
