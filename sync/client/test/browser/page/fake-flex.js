// A fake of the parts of Flex UI 2.x that @flex-bridge/client touches, for the browser tests:
//
// - `flex.Actions`: `addListener(name, listener)`, `removeListener`, and
//   `invokeAction('AcceptTask', payload)`, which awaits every `beforeAcceptTask` listener in
//   turn (each gets `(payload, abort)`), stops if one called `abort()`, and otherwise runs
//   Flex's own accept: what the TaskRouter worker SDK does, here the emulator's
//   `POST /sdk/taskrouter/v1/Reservations/<WR>/accept` with the agent's token.
// - `manager`: `user.token`, `events` ('tokenUpdated'), `workerClient.sid`, and
//   `insightsClient` (Flex's own Sync client: here an EmulatorSyncClient). Like Flex,
//   `refreshToken()` gives the new token to its own Sync client and then emits 'tokenUpdated'.
// - the agent's tasks: Flex learns them from its TaskRouter connection; the fake polls the test
//   server's `/test/reservations` (the worker's reservations as TaskRouter has them).

class Emitter {
  constructor() {
    this.listeners = new Map();
  }
  addListener(event, listener) {
    const list = this.listeners.get(event) ?? [];
    list.push(listener);
    this.listeners.set(event, list);
    return this;
  }
  removeListener(event, listener) {
    const list = this.listeners.get(event) ?? [];
    const at = list.indexOf(listener);
    if (at >= 0) list.splice(at, 1);
    return this;
  }
  on(event, listener) {
    return this.addListener(event, listener);
  }
  emit(event, ...args) {
    for (const listener of [...(this.listeners.get(event) ?? [])]) listener(...args);
  }
}

export class FakeActions {
  constructor(actions) {
    this.actions = actions;
    this.listeners = new Map();
  }

  addListener(name, listener) {
    const list = this.listeners.get(name) ?? [];
    list.push(listener);
    this.listeners.set(name, list);
  }

  removeListener(name, listener) {
    const list = this.listeners.get(name) ?? [];
    const at = list.indexOf(listener);
    if (at >= 0) list.splice(at, 1);
  }

  /** Resolves with `{ aborted, result?, error? }`. */
  async invokeAction(name, payload) {
    let aborted = false;
    const abort = () => {
      aborted = true;
    };
    for (const listener of [...(this.listeners.get(`before${name}`) ?? [])]) {
      await listener(payload, abort);
      if (aborted) return { aborted: true };
    }
    const action = this.actions[name];
    if (!action) throw new Error(`fake Flex has no action ${name}`);
    let result;
    try {
      result = await action(payload);
    } catch (error) {
      return { aborted: false, error: String(error?.message ?? error) };
    }
    for (const listener of [...(this.listeners.get(`after${name}`) ?? [])]) await listener(payload);
    return { aborted: false, result };
  }
}

/**
 * `{ flex, manager, tasks }` for one agent. `tasks` is a Map of ReservationSid ->
 * `{ sid, taskSid, taskChannelUniqueName, status }`; 'tasksChanged' on `manager.events` says
 * when it changed.
 */
export function createFakeFlex({ emulatorUrl, workerSid, token, insightsClient, getToken }) {
  const events = new Emitter();
  const tasks = new Map();
  const ownAccepts = [];
  const manager = {
    user: { token },
    events,
    workerClient: { sid: workerSid },
    insightsClient,
    /** Flex's token refresh: its own clients first, then 'tokenUpdated'. */
    async refreshToken(ttl) {
      const fresh = await getToken(ttl);
      manager.user.token = fresh.token;
      await insightsClient.updateToken(fresh.token);
      events.emit('tokenUpdated', { token: fresh.token, expiration: fresh.expiration });
      return fresh;
    },
  };

  // Flex's own accept, as the TaskRouter worker SDK makes it.
  const acceptTask = async (payload) => {
    const sid = payload?.task?.sid ?? payload?.sid;
    const response = await fetch(`${emulatorUrl}/sdk/taskrouter/v1/Reservations/${sid}/accept`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${manager.user.token}` },
    });
    const body = await response.json().catch(() => ({}));
    ownAccepts.push({ sid, status: response.status, code: body?.code ?? null });
    if (!response.ok) throw new Error(`Flex's accept failed: HTTP ${response.status} ${body?.message ?? ''}`);
    const known = tasks.get(sid);
    if (known && body?.reservation_status) {
      known.status = body.reservation_status;
      events.emit('tasksChanged', sid);
    }
    return body;
  };
  const flex = { Actions: new FakeActions({ AcceptTask: acceptTask }) };

  let polling = false;
  let stopped = false;
  const poll = async () => {
    if (polling || stopped) return;
    polling = true;
    try {
      const response = await fetch('/test/reservations', { cache: 'no-store' });
      if (!response.ok) return;
      const { reservations } = await response.json();
      for (const r of reservations) {
        const known = tasks.get(r.sid);
        if (!known) {
          tasks.set(r.sid, { ...r });
          events.emit('tasksChanged', r.sid);
        } else if (known.status !== r.status) {
          known.status = r.status;
          events.emit('tasksChanged', r.sid);
        }
      }
    } catch {
      // the next poll tries again
    } finally {
      polling = false;
    }
  };
  const timer = setInterval(poll, 200);
  return {
    flex,
    manager,
    tasks,
    ownAccepts,
    poll,
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
