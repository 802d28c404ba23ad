/**
 * The bridge's `/flex` API, with the agent's Flex token, typed errors and timeouts.
 */
import type { ItemError, Op, Phase, ReservationStatus } from './item.js';
import { isObject, readJson } from './json.js';

/** An intent as `GET /flex/intents/<id>` and the action answers show it. */
export interface Intent {
  intent_id: string;
  op: Op;
  reservation_sid: string;
  task_sid: string;
  worker_sid: string;
  source: 'policy' | 'plugin' | 'timeout' | 'recovery' | 'taskrouter';
  phase: Phase;
  reservation_status: ReservationStatus | null;
  error: ItemError | null;
  /** The bridge's own bookkeeping (state, outcome, attempts, via, created_at, updated_at). */
  [field: string]: unknown;
}

export interface ActionResult {
  /** 200: settled applied within the wait. 202: still in flight; the Sync item will say. */
  status: 200 | 202;
  settled: boolean;
  intent: Intent;
  intentId: string;
  /** For 202: where to poll, relative to the bridge's base URL. */
  statusUrl?: string;
}

export interface AttributesResult {
  attributes: Record<string, unknown>;
  etag: string | null;
  changed: boolean;
}

export interface ActionOptions {
  /** Seconds to wait for the intent to settle (the bridge's default 5, at most 30). */
  wait?: number;
  signal?: AbortSignal;
}

export interface BridgeClientOptions {
  /** Where flex-bridge is served, e.g. `https://bridge.example.com`. */
  baseUrl: string;
  /** The agent's current Flex token (`manager.user.token`): asked for on every request. */
  getToken: () => string | Promise<string>;
  /** Give up on a request after this long (default 10 s, plus the request's `wait`). */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export type Params = Record<string, unknown>;

export interface BridgeClient {
  act(
    op: Op,
    reservationSid: string,
    body: { task_sid: string } & Params,
    options?: ActionOptions,
  ): Promise<ActionResult>;
  accept(reservationSid: string, taskSid: string, options?: ActionOptions): Promise<ActionResult>;
  reject(
    reservationSid: string,
    taskSid: string,
    params?: Params,
    options?: ActionOptions,
  ): Promise<ActionResult>;
  wrapup(
    reservationSid: string,
    taskSid: string,
    params?: Params,
    options?: ActionOptions,
  ): Promise<ActionResult>;
  complete(
    reservationSid: string,
    taskSid: string,
    params?: Params,
    options?: ActionOptions,
  ): Promise<ActionResult>;
  redirect(
    reservationSid: string,
    taskSid: string,
    params: Params,
    options?: ActionOptions,
  ): Promise<ActionResult>;
  conference(
    reservationSid: string,
    taskSid: string,
    params?: Params,
    options?: ActionOptions,
  ): Promise<ActionResult>;
  dequeue(
    reservationSid: string,
    taskSid: string,
    params?: Params,
    options?: ActionOptions,
  ): Promise<ActionResult>;
  call(
    reservationSid: string,
    taskSid: string,
    params: Params,
    options?: ActionOptions,
  ): Promise<ActionResult>;
  intent(intentId: string, options?: { signal?: AbortSignal }): Promise<Intent>;
  patchTaskAttributes(
    taskSid: string,
    patch: Record<string, unknown>,
    options?: { replaceMalformed?: boolean; signal?: AbortSignal },
  ): Promise<AttributesResult>;
}

/** An answer from the bridge that is not a success. */
export class BridgeError extends Error {
  override name = 'BridgeError';
  /** The HTTP status, or undefined when the bridge never answered. */
  readonly status: number | undefined;
  /** Twilio's integer code, the bridge's short string code, or null. */
  readonly code: string | number | null;
  readonly body: unknown;
  /** For a settled, failed intent: the intent, as on the Sync item. */
  readonly intent: Intent | undefined;

  constructor(
    message: string,
    status: number | undefined,
    code: string | number | null = null,
    body: unknown = undefined,
    intent: Intent | undefined = undefined,
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
    this.intent = intent;
  }
}

/** 400: the request does not match the op's parameters, or the op is unknown. Do not retry. */
export class BadRequestError extends BridgeError {
  override name = 'BadRequestError';
}
/** 401: the Flex token is missing, invalid or expired (already retried once with a fresh one). */
export class UnauthorizedError extends BridgeError {
  override name = 'UnauthorizedError';
}
/** 403: the token may not act on this reservation. Do not retry. */
export class ForbiddenError extends BridgeError {
  override name = 'ForbiddenError';
}
/** 404: no such reservation, task or intent. */
export class NotFoundError extends BridgeError {
  override name = 'NotFoundError';
}
/** 409: the reservation's status does not allow the op, or another intent is in flight. */
export class ConflictError extends BridgeError {
  override name = 'ConflictError';
}
/** 413: an attribute patch or the resulting attributes are too large. */
export class PayloadTooLargeError extends BridgeError {
  override name = 'PayloadTooLargeError';
}
/** 415: an attribute patch sent with the wrong content type. */
export class UnsupportedMediaTypeError extends BridgeError {
  override name = 'UnsupportedMediaTypeError';
}
/** 422: TaskRouter refused the request itself (e.g. an instruction invalid for the task). */
export class UnprocessableError extends BridgeError {
  override name = 'UnprocessableError';
}
/** 502: Twilio answered with an error. */
export class BadGatewayError extends BridgeError {
  override name = 'BadGatewayError';
}
/** 503: Twilio (or, under the strict policy, Sync) is unavailable. Retry later. */
export class UnavailableError extends BridgeError {
  override name = 'UnavailableError';
}
/**
 * The bridge did not answer: a refused connection, a network failure, a timeout, or an error
 * page from something in front of it (a proxy's 502/503/504 without the bridge's JSON body).
 * The request may or may not have reached the bridge.
 */
export class BridgeUnreachableError extends BridgeError {
  override name = 'BridgeUnreachableError';
}
/** No answer within the timeout. */
export class BridgeTimeoutError extends BridgeUnreachableError {
  override name = 'BridgeTimeoutError';
}

type ErrorClass = new (
  message: string,
  status: number | undefined,
  code?: string | number | null,
  body?: unknown,
  intent?: Intent,
) => BridgeError;

const BY_STATUS: Readonly<Record<number, ErrorClass>> = {
  400: BadRequestError,
  401: UnauthorizedError,
  403: ForbiddenError,
  404: NotFoundError,
  409: ConflictError,
  413: PayloadTooLargeError,
  415: UnsupportedMediaTypeError,
  422: UnprocessableError,
  502: BadGatewayError,
  503: UnavailableError,
};

const DEFAULT_TIMEOUT_MS = 10_000;

function errorFor(status: number, body: unknown): BridgeError {
  const err = isObject(body) && isObject(body['error']) ? body['error'] : undefined;
  const code = err && (typeof err['code'] === 'string' || typeof err['code'] === 'number') ? err['code'] : null;
  const message =
    err && typeof err['message'] === 'string' ? err['message'] : `the bridge answered HTTP ${status}`;
  const intent = isObject(body) && isObject(body['intent']) ? (body['intent'] as Intent) : undefined;
  const cls = BY_STATUS[status] ?? BridgeError;
  return new cls(message, status, code, body, intent);
}

/** A client for the bridge's `/flex` API. */
export function createBridgeClient(options: BridgeClientOptions): BridgeClient {
  const base = options.baseUrl.replace(/\/+$/, '');
  if (!/^https?:\/\//.test(base)) {
    throw new TypeError(`baseUrl must be an http(s) URL; got ${JSON.stringify(options.baseUrl)}`);
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const doFetch = (input: string, init: RequestInit): Promise<Response> =>
    (options.fetch ?? globalThis.fetch)(input, init);

  async function once(
    method: string,
    path: string,
    body: unknown,
    contentType: string,
    extraMs: number,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; body: unknown }> {
    const abandoned = (): unknown =>
      signal?.reason ?? new DOMException('The request was aborted', 'AbortError');
    if (signal?.aborted) throw abandoned();
    const token = await options.getToken();
    if (signal?.aborted) throw abandoned();
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs + extraMs);
    try {
      const headers: Record<string, string> = {
        Accept: 'application/json',
        Authorization: `Bearer ${token}`,
      };
      const init: RequestInit = { method, headers, signal: controller.signal };
      if (body !== undefined) {
        headers['Content-Type'] = contentType;
        init.body = JSON.stringify(body);
      }
      let response: Response;
      try {
        response = await doFetch(base + path, init);
      } catch (error) {
        if (signal?.aborted) throw error;
        if (timedOut) {
          throw new BridgeTimeoutError(`the bridge did not answer within ${timeoutMs + extraMs} ms`, undefined);
        }
        const reason = error instanceof Error ? error.message : String(error);
        throw new BridgeUnreachableError(`the bridge could not be reached: ${reason}`, undefined);
      }
      const parsed = await readJson(response);
      const fromBridge =
        isObject(parsed) && (isObject(parsed['error']) || isObject(parsed['intent']) || 'attributes' in parsed);
      if (!fromBridge && response.status >= 500) {
        throw new BridgeUnreachableError(
          `the bridge did not answer (HTTP ${response.status} without the bridge's JSON body)`,
          response.status,
        );
      }
      if (!fromBridge && response.ok) {
        throw new BridgeError(`unexpected answer from the bridge (HTTP ${response.status})`, response.status);
      }
      return { status: response.status, body: parsed };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async function request(
    method: string,
    path: string,
    body?: unknown,
    {
      contentType = 'application/json',
      extraMs = 0,
      signal,
    }: { contentType?: string; extraMs?: number; signal?: AbortSignal | undefined } = {},
  ): Promise<{ status: number; body: unknown }> {
    let answer = await once(method, path, body, contentType, extraMs, signal);
    if (answer.status === 401) {
      // The token may have been refreshed since it was read: one more try with the current one.
      answer = await once(method, path, body, contentType, extraMs, signal);
    }
    if (answer.status >= 200 && answer.status < 300) return answer;
    throw errorFor(answer.status, answer.body);
  }

  async function act(
    op: Op,
    reservationSid: string,
    body: { task_sid: string } & Params,
    actionOptions: ActionOptions = {},
  ): Promise<ActionResult> {
    const query = actionOptions.wait === undefined ? '' : `?wait=${encodeURIComponent(String(actionOptions.wait))}`;
    const waitMs = (actionOptions.wait ?? 5) * 1000;
    const path = `/flex/reservations/${encodeURIComponent(reservationSid)}/${encodeURIComponent(op)}${query}`;
    const answer = await request('POST', path, body, { extraMs: waitMs, signal: actionOptions.signal });
    const parsed = isObject(answer.body) ? answer.body : {};
    const intent = parsed['intent'] as Intent;
    const result: ActionResult = {
      status: answer.status === 202 ? 202 : 200,
      settled: answer.status !== 202,
      intent,
      intentId: typeof parsed['intent_id'] === 'string' ? parsed['intent_id'] : intent.intent_id,
    };
    if (typeof parsed['status_url'] === 'string') result.statusUrl = parsed['status_url'];
    return result;
  }

  const withParams =
    (op: Op) =>
    (reservationSid: string, taskSid: string, params: Params = {}, actionOptions?: ActionOptions) =>
      act(op, reservationSid, { ...params, task_sid: taskSid }, actionOptions);

  return {
    act,
    accept: (reservationSid, taskSid, actionOptions) =>
      act('accept', reservationSid, { task_sid: taskSid }, actionOptions),
    reject: withParams('reject'),
    wrapup: withParams('wrapup'),
    complete: withParams('complete'),
    redirect: withParams('redirect'),
    conference: withParams('conference'),
    dequeue: withParams('dequeue'),
    call: withParams('call'),
    async intent(intentId, intentOptions = {}) {
      const answer = await request('GET', `/flex/intents/${encodeURIComponent(intentId)}`, undefined, {
        signal: intentOptions.signal,
      });
      return (answer.body as { intent: Intent }).intent;
    },
    async patchTaskAttributes(taskSid, patch, patchOptions = {}) {
      const query = patchOptions.replaceMalformed ? '?replace_malformed=true' : '';
      const answer = await request('PATCH', `/flex/tasks/${encodeURIComponent(taskSid)}/attributes${query}`, patch, {
        contentType: 'application/merge-patch+json',
        signal: patchOptions.signal,
      });
      return answer.body as AttributesResult;
    },
  };
}
