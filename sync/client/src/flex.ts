/**
 * Wire the bridge into Flex UI 2.x: the accept guard, the agent's accept through the bridge
 * (with a fallback when the bridge is down), the "accepting…" indication, token refresh.
 */
import { BridgeError, BridgeUnreachableError, createBridgeClient } from './bridge.js';
import type { BridgeClient } from './bridge.js';
import { acceptDecision, failureMessage, indication } from './item.js';
import type { Decision, ReservationItem } from './item.js';
import type { SyncClientLike } from './sync.js';
import { watchWorkerChannel } from './watcher.js';
import type { ChannelWatcher } from './watcher.js';

/** The part of a Flex `ITask` the guard reads. */
export interface FlexTaskLike {
  /** The ReservationSid (a Flex task is a reservation). */
  readonly sid: string;
  readonly taskSid?: string;
  readonly taskChannelUniqueName?: string;
}

/** The `AcceptTask` action's payload: `{ task }` or `{ sid }`. */
export interface AcceptTaskPayload {
  task?: FlexTaskLike;
  sid?: string;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyListener = (...args: any[]) => unknown;

/** The part of the `flex` object (`@twilio/flex-ui`) this uses. */
export interface FlexLike {
  readonly Actions: {
    addListener(name: string, listener: AnyListener): unknown;
    removeListener?(name: string, listener: AnyListener): unknown;
  };
}

/** The part of Flex's `Manager` this uses. */
export interface ManagerLike {
  readonly user: { readonly token: string };
  readonly events?: {
    addListener(event: string, listener: AnyListener): unknown;
    removeListener?(event: string, listener: AnyListener): unknown;
  };
  readonly workerClient?: { readonly sid: string } | null | undefined;
  /** Flex's own twilio-sync client on the Flex Sync service. */
  readonly insightsClient?: unknown;
}

export interface FlexBridgeOptions {
  /** Where flex-bridge is served. Its FLEX_BRIDGE_CORS_ORIGINS must list the Flex origin. */
  baseUrl: string;
  /** The Sync client to watch the channel with (default: `manager.insightsClient`). */
  syncClient?: SyncClientLike;
  /**
   * What the agent's Accept does when the bridge cannot be reached and the channel shows
   * nothing in flight: `'flex'` (default, fail open) lets Flex's own accept run; `'refuse'`
   * (fail closed) cancels it and tells the agent.
   */
  whenBridgeUnreachable?: 'flex' | 'refuse';
  /**
   * Which accepts go through the bridge (announced on the channel like every change). The
   * others are Flex's own, still guarded. Default: every task but voice, because a plain
   * accept does not connect a call.
   */
  routeAccept?: (task: FlexTaskLike | undefined) => boolean;
  /** How long the guard waits while the bridge acts before giving up (default 30 s). */
  maxWaitMs?: number;
  /** `?wait` of the bridge's accept, in seconds (default 5). */
  acceptWaitSeconds?: number;
  /** The bridge client's timeout per request (default 10 s plus the wait). */
  timeoutMs?: number;
  fetch?: typeof fetch;
  /** Tells the agent why an accept did not happen (default: console.warn). */
  notify?: (message: string, reservationSid: string) => void;
  /** Failures of the channel watcher (default: console.error). */
  onError?: (error: unknown) => void;
}

export interface FlexBridgeHandle {
  /** The channel, once it could be opened (the guard works without it, routing to the bridge). */
  readonly watcher: ChannelWatcher | undefined;
  readonly bridge: BridgeClient;
  /** The reservation's latest item on the channel. */
  current(reservationSid: string): ReservationItem | undefined;
  /** What the agent's Accept may do now. */
  decision(reservationSid: string): Decision;
  /** "accepting…" and the like while the bridge (or this client, through it) acts. */
  indication(reservationSid: string): string | undefined;
  /** Called with a ReservationSid whenever what the handle says about it may have changed. */
  subscribe(listener: (reservationSid: string) => void): () => void;
  close(): void;
}

const DEFAULT_MAX_WAIT_MS = 30_000;
const RETRY_MS = [1_000, 2_000, 5_000, 10_000, 30_000];

function isVoice(task: FlexTaskLike | undefined): boolean {
  return task?.taskChannelUniqueName === 'voice';
}

/**
 * Install the bridge into Flex: call it from your plugin's `init(flex, manager)`.
 *
 * The `beforeAcceptTask` guard reads the reservation's item (see `acceptDecision`): it waits
 * while the bridge acts, never accepts what the bridge accepted, and cancels an accept of an
 * offer that is gone. An accept the bridge may make is sent to the bridge (so it is announced
 * like every change) and Flex's own accept is canceled; when the bridge does not answer and the
 * channel still shows nothing in flight, `whenBridgeUnreachable` decides.
 */
export async function installFlexBridge(
  flex: FlexLike,
  manager: ManagerLike,
  options: FlexBridgeOptions,
): Promise<FlexBridgeHandle> {
  const workerSid = manager.workerClient?.sid;
  if (!workerSid) {
    throw new TypeError('installFlexBridge: manager.workerClient.sid is not set (is the user an agent?)');
  }
  const syncClient = options.syncClient ?? (manager.insightsClient as SyncClientLike | undefined);
  if (!syncClient || typeof syncClient.map !== 'function') {
    throw new TypeError('installFlexBridge: pass options.syncClient, or a manager with insightsClient');
  }
  const notify =
    options.notify ?? ((message: string) => console.warn(`flex-bridge: ${message}`));
  const onError = options.onError ?? ((error: unknown) => console.error('flex-bridge:', error));
  const routeAccept = options.routeAccept ?? ((task: FlexTaskLike | undefined) => !isVoice(task));
  const whenUnreachable = options.whenBridgeUnreachable ?? 'flex';
  const maxWaitMs = options.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
  const acceptWait = options.acceptWaitSeconds ?? 5;

  let latestToken = manager.user.token;
  const bridgeOptions: Parameters<typeof createBridgeClient>[0] = {
    baseUrl: options.baseUrl,
    getToken: () => manager.user.token || latestToken,
  };
  if (options.timeoutMs !== undefined) bridgeOptions.timeoutMs = options.timeoutMs;
  if (options.fetch !== undefined) bridgeOptions.fetch = options.fetch;
  const bridge = createBridgeClient(bridgeOptions);

  const listeners = new Set<(reservationSid: string) => void>();
  const emit = (reservationSid: string): void => {
    for (const listener of [...listeners]) {
      try {
        listener(reservationSid);
      } catch (error) {
        onError(error);
      }
    }
  };
  const accepting = new Map<string, number>(); // accepts in flight to the bridge, per reservation

  let closed = false;
  let watcher: ChannelWatcher | undefined;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  const start = async (attempt: number): Promise<void> => {
    try {
      const opened = await watchWorkerChannel(syncClient, workerSid, (sid) => emit(sid), {
        onError,
      });
      if (closed) {
        opened.close();
        return;
      }
      watcher = opened;
      for (const sid of opened.items().keys()) emit(sid);
    } catch (error) {
      onError(error);
      if (closed) return;
      const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)] ?? 30_000;
      retryTimer = setTimeout(() => void start(attempt + 1), delay);
    }
  };
  await start(0);

  const current = (sid: string): ReservationItem | undefined => watcher?.current(sid);
  const decision = (sid: string): Decision => acceptDecision(current(sid));

  const waiting = new Set<() => void>(); // guards waiting while the bridge acts

  /**
   * Resolves with the decision once it is not `wait`, or `wait` after `maxWaitMs` (or at once
   * when the handle is closed).
   */
  const settled = (sid: string): Promise<Decision> =>
    new Promise((resolve) => {
      const now = decision(sid);
      if (now !== 'wait') {
        resolve(now);
        return;
      }
      const finish = (answer: Decision): void => {
        clearTimeout(timer);
        listeners.delete(onChange);
        waiting.delete(release);
        resolve(answer);
      };
      const release = (): void => finish(decision(sid));
      const onChange = (changed: string): void => {
        if (changed !== sid) return;
        const next = decision(sid);
        if (next !== 'wait') finish(next);
      };
      const timer = setTimeout(release, maxWaitMs);
      listeners.add(onChange);
      waiting.add(release);
    });

  const guard = async (payload: AcceptTaskPayload, abort: () => void): Promise<void> => {
    const task = payload?.task;
    const sid = task?.sid ?? payload?.sid;
    if (typeof sid !== 'string' || closed) return;
    const first = await settled(sid);
    if (first === 'wait') {
      abort(); // still acting: never race it
      if (closed) return;
      notify('flex-bridge is still acting on this reservation; try again in a moment', sid);
      return;
    }
    if (first === 'accepted') {
      abort(); // the bridge accepted it: a second accept would fail, or worse
      return;
    }
    if (first === 'gone') {
      abort();
      notify(failureMessage(current(sid)) ?? 'This reservation is no longer available', sid);
      return;
    }
    const taskSid = task?.taskSid;
    if (!routeAccept(task) || typeof taskSid !== 'string') return; // Flex's own accept, guarded
    accepting.set(sid, (accepting.get(sid) ?? 0) + 1);
    emit(sid);
    try {
      await bridge.accept(sid, taskSid, { wait: acceptWait });
      abort(); // the bridge accepted it, or is accepting it: the channel shows the outcome
    } catch (error) {
      if (error instanceof BridgeUnreachableError) {
        // The request may still have reached the bridge: if the channel shows it acting, the
        // bridge owns this accept.
        const after = decision(sid);
        if (after !== 'accept') {
          abort();
          return;
        }
        if (whenUnreachable === 'flex') return; // fail open: Flex's own accept runs
        abort();
        notify('flex-bridge cannot be reached, so the reservation was not accepted', sid);
        return;
      }
      abort();
      // A 409 because the bridge is already acting (its announcement had not reached this
      // browser when the agent clicked) is not the agent's problem: the channel will show it.
      const code = error instanceof BridgeError ? error.code : undefined;
      const after = decision(sid);
      if (code === 'intent_in_flight' || after === 'wait' || after === 'accepted') return;
      notify(error instanceof Error ? error.message : String(error), sid);
    } finally {
      const left = (accepting.get(sid) ?? 1) - 1;
      if (left > 0) accepting.set(sid, left);
      else accepting.delete(sid);
      emit(sid);
    }
  };
  const onToken = (payload: unknown): void => {
    const token =
      typeof payload === 'object' && payload !== null && typeof (payload as { token?: unknown }).token === 'string'
        ? (payload as { token: string }).token
        : manager.user.token;
    latestToken = token;
    // Flex refreshes its own insightsClient; a client the plugin made is ours to refresh.
    if (syncClient !== manager.insightsClient && typeof syncClient.updateToken === 'function') {
      syncClient.updateToken(token).catch(onError);
    }
  };

  flex.Actions.addListener('beforeAcceptTask', guard);
  manager.events?.addListener('tokenUpdated', onToken);

  return {
    get watcher() {
      return watcher;
    },
    bridge,
    current,
    decision,
    indication: (sid: string) => (accepting.has(sid) ? 'accepting…' : indication(current(sid))),
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      if (closed) return;
      closed = true;
      clearTimeout(retryTimer);
      for (const release of [...waiting]) release();
      flex.Actions.removeListener?.('beforeAcceptTask', guard);
      manager.events?.removeListener?.('tokenUpdated', onToken);
      watcher?.close();
      listeners.clear();
    },
  };
}
