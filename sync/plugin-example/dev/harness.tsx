/**
 * The local harness: runs the plugin's `setUp(flex, manager, settings)` in a page that stands
 * in for Flex, against `flex-bridge emulator` and `flex-bridge serve` on this machine.
 *
 * - The agent's token comes from the emulator (`POST /_emulator/tokens`, through the dev
 *   server's proxy: the emulator's admin API has no CORS).
 * - `manager.insightsClient` is an `EmulatorSyncClient`: the emulator's SDK surface stands in
 *   for twilio-sync, on the Sync service the token grants (the emulator's seeded one).
 * - The task list is built from the emulator's live feed (`/_emulator/ws`): this worker's
 *   reservations as TaskRouter reports them.
 * - "Accept" invokes the AcceptTask action: the plugin's guard runs first; if it does not
 *   abort, "Flex's own accept" runs, here the emulator's SDK accept.
 *
 * Open http://localhost:5173/?worker=WK… (a worker SID from the emulator's state file).
 */
import * as React from 'react';
import * as ReactDOM from 'react-dom';
import type * as Flex from '@twilio/flex-ui';
import { EmulatorSyncClient } from '@flex-bridge/client/emulator';
import { buildConfig } from '../src/config';
import { setUp } from '../src/FlexBridgePlugin';
import type { BridgeStore } from '../src/store';
import { Emitter, fakeFlex } from './fake-flex';
import type { FakeFlex, FakeManager } from './fake-flex';

const EMULATOR_URL = import.meta.env.VITE_FLEX_BRIDGE_EMULATOR_URL || 'http://127.0.0.1:8700';
const TOKEN_TTL_S = 3600;

/** The part of a Flex ITask the plugin and this page read. */
interface HarnessTask {
  readonly sid: string;
  readonly taskSid: string;
  readonly taskChannelUniqueName: string;
  readonly status: string;
}

const STATUS_BY_EVENT: Readonly<Record<string, string>> = {
  'reservation.created': 'pending',
  'reservation.accepted': 'accepted',
  'reservation.rejected': 'rejected',
  'reservation.timeout': 'timeout',
  'reservation.canceled': 'canceled',
  'reservation.rescinded': 'rescinded',
  'reservation.wrapup': 'wrapping',
  'reservation.completed': 'completed',
};

async function issueToken(workerSid: string): Promise<string> {
  const response = await fetch('/_emulator/tokens', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ worker_sid: workerSid, roles: ['agent'], ttl: TOKEN_TTL_S }),
  });
  const body = (await response.json()) as { token?: unknown; message?: unknown };
  if (response.status !== 201 || typeof body.token !== 'string') {
    throw new Error(`the emulator refused a token: ${String(body.message ?? response.status)}`);
  }
  return body.token;
}

/** This worker's reservations, from the emulator's live feed. */
class TaskFeed {
  readonly changes = new Emitter();
  private readonly tasks = new Map<string, HarnessTask>();
  private socket: WebSocket | undefined;

  constructor(private readonly workerSid: string) {}

  start(): void {
    const url = `${window.location.origin.replace(/^http/, 'ws')}/_emulator/ws`;
    const socket = new WebSocket(url);
    socket.onmessage = (event: MessageEvent) => this.receive(String(event.data));
    socket.onclose = () => window.setTimeout(() => this.start(), 2000);
    this.socket = socket;
  }

  list(): HarnessTask[] {
    return [...this.tasks.values()].reverse();
  }

  private receive(raw: string): void {
    const message = JSON.parse(raw) as { product?: string; type?: string; data?: Record<string, string> };
    const status = message.type ? STATUS_BY_EVENT[message.type] : undefined;
    const data = message.data;
    if (message.product !== 'taskrouter' || !status || !data) return;
    if (data['WorkerSid'] !== this.workerSid || !data['ReservationSid']) return;
    const sid = data['ReservationSid'];
    this.tasks.set(sid, {
      sid,
      taskSid: data['TaskSid'] ?? '',
      taskChannelUniqueName: data['TaskChannelUniqueName'] ?? '',
      status,
    });
    this.changes.emit('change');
  }
}

function useChanges(emitter: Emitter): void {
  const [, bump] = React.useReducer((n: number) => n + 1, 0);
  React.useEffect(() => {
    const listener = (): void => bump();
    emitter.addListener('change', listener);
    return () => {
      emitter.removeListener('change', listener);
    };
  }, [emitter]);
}

interface PageProps {
  readonly flex: FakeFlex;
  readonly manager: FakeManager;
  readonly store: BridgeStore;
  readonly feed: TaskFeed;
}

function Page({ flex, manager, store, feed }: PageProps): JSX.Element {
  useChanges(feed.changes);
  useChanges(flex.Notifications.changes);
  useChanges(flex.TaskListItem.Content.changes);
  const [log, setLog] = React.useState<string[]>([]);
  const [selected, setSelected] = React.useState<string | undefined>();
  const [state, setState] = React.useState(store.current);
  React.useEffect(() => store.subscribe(() => setState(store.current)), [store]);
  const note = (line: string): void => setLog((lines) => [`${new Date().toLocaleTimeString()} ${line}`, ...lines].slice(0, 20));

  const accept = async (task: HarnessTask): Promise<void> => {
    note(`AcceptTask ${task.sid}`);
    const ran = await flex.Actions.invokeAction('AcceptTask', { task, sid: task.sid }, async () => {
      // Flex's own accept. In Flex this goes through the TaskRouter worker SDK.
      const response = await fetch(`${EMULATOR_URL}/sdk/taskrouter/v1/Reservations/${task.sid}/accept`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${manager.user.token}` },
      });
      note(`Flex's own accept: HTTP ${response.status}`);
    });
    if (!ran) note(`the plugin's guard took over (aborted Flex's own accept) for ${task.sid}`);
  };

  const tasks = feed.list();
  const current = tasks.find((t) => t.sid === selected);
  return (
    <div>
      <header>
        <strong>flex-bridge plugin harness</strong> worker <code>{manager.workerClient.sid}</code> · bridge{' '}
        <code>{buildConfig.ok ? buildConfig.config.bridgeUrl : 'not configured'}</code> · when unreachable{' '}
        <code>{buildConfig.ok ? buildConfig.config.whenBridgeUnreachable : '-'}</code> · plugin{' '}
        <code data-testid="plugin-state">{state.status}</code>
      </header>
      <section aria-label="notifications">
        {flex.Notifications.active().map((n) => (
          <div key={n.instance} className={`notification ${n.type}`} data-testid="notification">
            {n.body} <button onClick={() => flex.Notifications.dismiss(n.instance)}>×</button>
          </div>
        ))}
      </section>
      <main>
        <ul className="tasks">
          {tasks.length === 0 && <li>No reservations yet. Create a task routed to this worker (README.md).</li>}
          {tasks.map((task) => (
            <li key={task.sid} data-testid="task" data-sid={task.sid} onClick={() => setSelected(task.sid)}>
              <div>
                {task.taskChannelUniqueName} <code>{task.taskSid}</code> reservation <code>{task.sid}</code>{' '}
                <span data-testid="status">{task.status}</span>
              </div>
              {flex.TaskListItem.Content.render({ task })}
              <button disabled={task.status !== 'pending'} onClick={() => void accept(task)}>
                Accept
              </button>
            </li>
          ))}
        </ul>
        {current && (
          <div className="canvas">
            <h3>Task {current.taskSid}</h3>
            {flex.TaskCanvasHeader.Content.render({ task: current })}
          </div>
        )}
      </main>
      <pre className="log">{log.join('\n')}</pre>
    </div>
  );
}

async function main(root: HTMLElement): Promise<void> {
  const workerSid = new URLSearchParams(window.location.search).get('worker');
  if (!workerSid) {
    root.textContent = 'Add ?worker=WK… to the URL: a worker SID from the emulator\'s state file.';
    return;
  }
  const token = await issueToken(workerSid);
  const syncClient = new EmulatorSyncClient(token, { baseUrl: EMULATOR_URL });
  const manager: FakeManager = {
    user: { token },
    events: new Emitter(),
    workerClient: { sid: workerSid },
    insightsClient: syncClient,
  };
  // Flex refreshes the agent's token and its own Sync client; so does the harness.
  const refresh = async (): Promise<void> => {
    const fresh = await issueToken(workerSid);
    manager.user.token = fresh;
    await syncClient.updateToken(fresh);
    manager.events.emit('tokenUpdated', { token: fresh });
  };
  window.setInterval(() => void refresh().catch(console.error), (TOKEN_TTL_S - 300) * 1000);

  const flex = fakeFlex();
  const feed = new TaskFeed(workerSid);
  feed.start();
  // The plugin's own code, as Flex would run it. The fakes implement only what it uses.
  const store = setUp(flex as unknown as typeof Flex, manager as unknown as Flex.Manager, buildConfig);
  ReactDOM.render(<Page flex={flex} manager={manager} store={store} feed={feed} />, root);
}

const root = document.getElementById('root');
if (root) {
  main(root).catch((error: unknown) => {
    root.textContent = `The harness could not start: ${error instanceof Error ? error.message : String(error)}`;
  });
}
