// The test page: a fake Flex agent desktop with @flex-bridge/client installed the way a
// plugin installs it, against the emulator (Sync through EmulatorSyncClient) and the bridge.
//
// Everything the browser tests check is on `window.testApp` and in the DOM:
// - per reservation, a row `tr[data-sid]` with `.status`, `.indication`, `.decision`, `.item`,
//   `.flex` and an Accept button;
// - `testApp.history[sid]`: every distinct (indication, status) the row showed, in order;
// - `testApp.snapshot`: the items the channel held when installFlexBridge resolved;
// - `testApp.clicks`, `testApp.notifications`, `testApp.ownAccepts`, `testApp.syncEvents`.
import { installFlexBridge } from '/dist/index.js';
import { EmulatorSyncClient } from '/dist/emulator.js';
import { createFakeFlex } from '/page/fake-flex.js';

const $ = (selector) => document.querySelector(selector);
const log = (...args) => console.log('[page]', ...args);

const app = {
  ready: false,
  error: null,
  history: {},
  snapshot: {},
  clicks: [],
  notifications: [],
  syncEvents: [],
  refreshes: 0,
};
window.testApp = app;

async function getToken(ttl) {
  const response = await fetch(`/test/token?ttl=${encodeURIComponent(String(ttl ?? 3600))}`, { cache: 'no-store' });
  if (!response.ok) throw new Error(`no token: HTTP ${response.status}`);
  return response.json();
}

function rowFor(sid) {
  let row = document.querySelector(`tr[data-sid="${sid}"]`);
  if (row) return row;
  row = document.createElement('tr');
  row.dataset.sid = sid;
  for (const name of ['sid', 'task', 'status', 'indication', 'item', 'decision', 'flex']) {
    const cell = document.createElement('td');
    cell.className = name;
    row.append(cell);
  }
  const cell = document.createElement('td');
  const button = document.createElement('button');
  button.className = 'accept';
  button.textContent = 'Accept';
  button.addEventListener('click', () => void accept(sid));
  cell.append(button);
  row.append(cell);
  $('#tasks').prepend(row);
  return row;
}

function render(sid) {
  const { handle, fake } = app;
  if (!handle || !fake) return;
  const task = fake.tasks.get(sid);
  const item = handle.current(sid);
  if (!task && !item) return;
  const decision = handle.decision(sid);
  const indication = handle.indication(sid) ?? '';
  // What the agent is told about the reservation: the bridge's word when it has one, else Flex's.
  const status = decision === 'accepted' ? 'accepted' : (item?.reservation_status ?? task?.status ?? '');
  const row = rowFor(sid);
  row.querySelector('.sid').textContent = sid;
  row.querySelector('.task').textContent = task?.taskSid ?? item?.task_sid ?? '';
  const statusCell = row.querySelector('.status');
  statusCell.textContent = status;
  statusCell.className = `status ${status}`;
  row.querySelector('.indication').textContent = indication;
  row.querySelector('.item').textContent = item
    ? `${item.op} ${item.phase}${item.reservation_status ? ` (${item.reservation_status})` : ''} by ${item.source}`
    : '—';
  row.querySelector('.decision').textContent = decision;
  row.querySelector('.flex').textContent = task?.status ?? '';
  const seen = (app.history[sid] ??= []);
  const last = seen[seen.length - 1];
  if (!last || last.indication !== indication || last.status !== status || last.phase !== (item?.phase ?? null)) {
    seen.push({ indication, status, phase: item?.phase ?? null, decision, flex: task?.status ?? null });
  }
}

async function accept(sid) {
  const { handle, fake } = app;
  const task = fake.tasks.get(sid);
  const click = {
    sid,
    decision: handle.decision(sid),
    indication: handle.indication(sid) ?? null,
    phase: handle.current(sid)?.phase ?? null,
    outcome: null,
  };
  app.clicks.push(click);
  log('accept clicked', JSON.stringify(click));
  const payload = {
    sid,
    task: task ? { sid, taskSid: task.taskSid, taskChannelUniqueName: task.taskChannelUniqueName } : { sid },
  };
  const promise = fake.flex.Actions.invokeAction('AcceptTask', payload);
  render(sid);
  try {
    click.outcome = await promise;
  } catch (error) {
    click.outcome = { error: String(error?.message ?? error) };
  }
  log('accept done', sid, JSON.stringify(click.outcome));
  render(sid);
}

async function main() {
  const config = await (await fetch('/test/config', { cache: 'no-store' })).json();
  const ttl = new URLSearchParams(location.search).get('ttl') ?? '3600';
  const first = await getToken(Number(ttl));
  $('#worker').textContent = config.workerSid;
  $('#bridge').textContent = config.bridgeUrl;

  const sync = new EmulatorSyncClient(first.token, { baseUrl: config.emulatorUrl });
  const showState = (state) => {
    $('#state').textContent = state;
    $('#state').dataset.state = state;
    app.syncEvents.push({ event: 'connectionStateChanged', state });
    log('sync', state);
  };
  showState(sync.connectionState);
  sync.on('connectionStateChanged', showState);
  sync.on('tokenAboutToExpire', () => app.syncEvents.push({ event: 'tokenAboutToExpire' }));
  sync.on('tokenExpired', () => app.syncEvents.push({ event: 'tokenExpired' }));

  const fake = createFakeFlex({
    emulatorUrl: config.emulatorUrl,
    workerSid: config.workerSid,
    token: first.token,
    insightsClient: sync,
    getToken,
  });
  app.fake = fake;
  app.sync = sync;
  app.ownAccepts = fake.ownAccepts;
  app.tokens = [first.token];

  const handle = await installFlexBridge(fake.flex, fake.manager, {
    baseUrl: config.bridgeUrl,
    whenBridgeUnreachable: 'flex',
    // Short enough that a down bridge is noticed quickly in the tests.
    timeoutMs: 5000,
    notify: (message, sid) => {
      app.notifications.push({ sid, message });
      const line = document.createElement('div');
      line.textContent = `${sid}: ${message}`;
      $('#notifications').append(line);
      log('notify', sid, message);
    },
    onError: (error) => log('flex-bridge error', String(error?.message ?? error)),
  });
  app.handle = handle;
  for (const [sid, item] of handle.watcher?.items() ?? []) app.snapshot[sid] = item;

  handle.subscribe((sid) => render(sid));
  fake.manager.events.addListener('tasksChanged', (sid) => render(sid));
  await fake.poll();
  for (const sid of new Set([...fake.tasks.keys(), ...Object.keys(app.snapshot)])) render(sid);

  app.refreshToken = async (ttlSeconds = 3600) => {
    const fresh = await fake.manager.refreshToken(ttlSeconds);
    app.tokens.push(fresh.token);
    app.refreshes += 1;
    $('#refreshes').textContent = String(app.refreshes);
    log('token refreshed');
    return { expiration: fresh.expiration };
  };
  app.ready = true;
  $('#ready').dataset.ready = 'true';
  $('#ready').textContent = 'ready';
  log('ready; snapshot has', Object.keys(app.snapshot).length, 'items');
}

main().catch((error) => {
  app.error = String(error?.stack ?? error);
  $('#ready').textContent = `failed: ${error?.message ?? error}`;
  console.error('[page] start-up failed', error);
});
