// The local stack the browser tests (and a developer) run against: `flex-bridge emulator`,
// `flex-bridge serve` wired to it, and a static server for the test page and dist/.
//
// Test-only: nothing here ships in the package. Plain JavaScript (ESM, Node >= 20), so that
// scripts/browser-tests.mjs can use it after `npm run build` alone.
//
// As a script, `node test/support/stack.mjs` starts the whole stack for local development and
// prints the page's URL; open it in a browser, create tasks with the printed curl line, and
// stop it with Ctrl-C.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** sync/client */
export const CLIENT_DIR = resolve(here, '..', '..');

// ------------------------------------------------------------------------------ finding things

/** Chromium: $CHROMIUM, /usr/bin/chromium, or chromium / chromium-browser on the PATH. */
export function findChromium(env = process.env) {
  if (env.CHROMIUM) return existsSync(env.CHROMIUM) ? env.CHROMIUM : undefined;
  if (existsSync('/usr/bin/chromium')) return '/usr/bin/chromium';
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    for (const name of ['chromium', 'chromium-browser']) {
      const candidate = join(dir, name);
      if (existsSync(candidate)) return candidate;
    }
  }
  return undefined;
}

/** The flex-bridge command: $FLEX_BRIDGE_BIN, or the repository's .venv/bin/flex-bridge. */
export function findBridgeBin(env = process.env) {
  const candidate = env.FLEX_BRIDGE_BIN || resolve(CLIENT_DIR, '..', '..', '.venv', 'bin', 'flex-bridge');
  return existsSync(candidate) ? candidate : undefined;
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createNetServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check()` until it returns a truthy value; throws `what` after `timeoutMs`. */
export async function waitFor(check, { timeoutMs = 15_000, intervalMs = 100, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const reason = lastError ? ` (last error: ${lastError.message ?? lastError})` : '';
      throw new Error(`timed out waiting for ${what}${reason}`);
    }
    await sleep(intervalMs);
  }
}

// ------------------------------------------------------------------------------ child processes

/** A child process whose output is kept (the last lines) for a failure report. */
export class Child {
  constructor(name, command, args, options = {}) {
    this.name = name;
    this.lines = [];
    this.exitCode = undefined;
    this.proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    this.pid = this.proc.pid;
    const keep = (chunk) => {
      for (const line of String(chunk).split('\n')) {
        if (line === '') continue;
        this.lines.push(line);
        if (this.lines.length > 2000) this.lines.shift();
      }
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((resolveExit) => {
      this.proc.on('exit', (code, signal) => {
        this.exitCode = code ?? signal;
        resolveExit(this.exitCode);
      });
      this.proc.on('error', (error) => {
        this.lines.push(`spawn failed: ${error.message}`);
        this.exitCode = 'spawn-error';
        resolveExit(this.exitCode);
      });
    });
  }

  get running() {
    return this.exitCode === undefined;
  }

  /** Stop it (SIGTERM, then SIGKILL if it lingers); resolves when it has exited. */
  async stop(signal = 'SIGTERM', graceMs = 5000) {
    if (!this.running) return this.exitCode;
    this.proc.kill(signal);
    const timer = setTimeout(() => {
      if (this.running) this.proc.kill('SIGKILL');
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
    return this.exitCode;
  }

  tail(n = 80) {
    return this.lines.slice(-n).join('\n');
  }
}

async function waitForHttp(url, child, what) {
  return waitFor(
    async () => {
      if (!child.running) throw new Error(`${child.name} exited (${child.exitCode}):\n${child.tail(40)}`);
      const response = await fetch(url);
      return response.ok;
    },
    { timeoutMs: 30_000, intervalMs: 100, what },
  ).catch((error) => {
    if (!child.running) throw new Error(`${child.name} exited (${child.exitCode}):\n${child.tail(40)}`);
    throw error;
  });
}

// ------------------------------------------------------------------------------ the emulator

/**
 * Start `flex-bridge emulator` on a free port, seeded, with its state file in `dir`.
 * Resolves with `{ child, url, state, admin }` once it answers `/_emulator/health`.
 */
export async function startEmulator({ bin, dir, port, assignmentUrl, eventUrl, workers = 1, reservationTimeout = 120 }) {
  const stateFile = join(dir, 'emulator.json');
  const args = ['emulator', '--host', '127.0.0.1', '--port', String(port), '--state-file', stateFile];
  args.push('--workers', String(workers), '--reservation-timeout', String(reservationTimeout));
  if (assignmentUrl) args.push('--assignment-url', assignmentUrl);
  if (eventUrl) args.push('--event-url', eventUrl);
  // The account's credentials come from the emulator's defaults, not from this environment.
  const env = { ...process.env };
  for (const name of ['TWILIO_ACCOUNT_SID', 'TWILIO_AUTH_TOKEN', 'TWILIO_API_KEY', 'TWILIO_API_SECRET']) delete env[name];
  const child = new Child('emulator', bin, args, { env });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/_emulator/health`, child, 'the emulator to answer');
  await waitFor(() => existsSync(stateFile) && statSync(stateFile).size > 0, { what: 'the emulator state file' });
  const state = JSON.parse(readFileSync(stateFile, 'utf8'));
  return { child, url, state, admin: new EmulatorAdmin(url, state) };
}

/** The emulator's admin API and the TaskRouter REST calls the tests make (Basic auth). */
export class EmulatorAdmin {
  constructor(url, state) {
    this.url = url;
    this.state = state;
    this.auth = `Basic ${Buffer.from(`${state.account_sid}:${state.auth_token}`).toString('base64')}`;
  }

  get workspace() {
    return `${this.url}/taskrouter/v1/Workspaces/${this.state.workspace_sid}`;
  }

  async json(method, url, body, { form = false, basic = false } = {}) {
    const headers = { Accept: 'application/json' };
    if (basic) headers.Authorization = this.auth;
    let payload;
    if (body !== undefined) {
      headers['Content-Type'] = form ? 'application/x-www-form-urlencoded' : 'application/json';
      payload = form ? new URLSearchParams(body).toString() : JSON.stringify(body);
    }
    const response = await fetch(url, { method, headers, body: payload });
    const text = await response.text();
    const parsed = text ? JSON.parse(text) : undefined;
    if (!response.ok) {
      throw new Error(`${method} ${url} -> ${response.status}: ${text.slice(0, 500)}`);
    }
    return parsed;
  }

  /** A Flex token for the worker: `{ token, expiration, ... }`. */
  token(workerSid, ttl = 3600) {
    return this.json('POST', `${this.url}/_emulator/tokens`, { worker_sid: workerSid, roles: ['agent'], ttl });
  }

  createTask(attributes = { type: 'support' }, extra = {}) {
    return this.json('POST', `${this.workspace}/Tasks`, { Attributes: JSON.stringify(attributes), ...extra }, { form: true, basic: true });
  }

  task(taskSid) {
    return this.json('GET', `${this.workspace}/Tasks/${taskSid}`, undefined, { basic: true });
  }

  async taskReservations(taskSid) {
    const body = await this.json('GET', `${this.workspace}/Tasks/${taskSid}/Reservations`, undefined, { basic: true });
    return body.reservations;
  }

  async workerReservations(workerSid) {
    const body = await this.json('GET', `${this.workspace}/Workers/${workerSid}/Reservations?PageSize=100`, undefined, { basic: true });
    return body.reservations;
  }

  reservation(taskSid, reservationSid) {
    return this.json('GET', `${this.workspace}/Tasks/${taskSid}/Reservations/${reservationSid}`, undefined, { basic: true });
  }

  /** Finish an assigned task, so that its worker is free for the next one. */
  completeTask(taskSid, reason = 'browser test done') {
    return this.json('POST', `${this.workspace}/Tasks/${taskSid}`, { AssignmentStatus: 'completed', Reason: reason }, { form: true, basic: true });
  }

  cancelTask(taskSid, reason = 'browser test cleanup') {
    return this.json('POST', `${this.workspace}/Tasks/${taskSid}`, { AssignmentStatus: 'canceled', Reason: reason }, { form: true, basic: true });
  }

  setFaults(rules, seed = 1) {
    return this.json('POST', `${this.url}/_emulator/faults`, { rules, seed });
  }

  clearFaults() {
    return this.json('DELETE', `${this.url}/_emulator/faults`);
  }

  async log(kind, since = 0) {
    const query = new URLSearchParams({ since: String(since) });
    if (kind) query.set('kind', kind);
    const body = await this.json('GET', `${this.url}/_emulator/log?${query}`);
    return body.entries;
  }

  async lastSeq() {
    const entries = await this.log(undefined, 0);
    return entries.length ? entries[entries.length - 1].seq : 0;
  }

  /**
   * Every REST request that asked TaskRouter to accept the reservation (the bridge's and
   * Flex's own through the SDK surface, logged with `via: "sdk"`), whatever its answer.
   */
  async acceptsOf(reservationSid, since = 0) {
    const entries = await this.log('rest', since);
    return entries.filter(
      (e) =>
        e.product === 'taskrouter' &&
        e.method === 'POST' &&
        typeof e.path === 'string' &&
        e.path.endsWith(`/Reservations/${reservationSid}`) &&
        (e.form ?? {}).ReservationStatus === 'accepted',
    );
  }

  advanceClock(seconds) {
    return this.json('POST', `${this.url}/_emulator/clock/advance`, { seconds });
  }
}

// ------------------------------------------------------------------------------ the bridge

/** The policy the browser tests use: tasks with `route: "agent"` wait for the agent; the rest are accepted. */
export const TEST_POLICY = `# flex-bridge browser tests
[sync]
mode = "degrade"

[[assignment.rules]]
name = "the agent decides"
match = { task_attributes = { route = "agent" } }
op = "defer"

[[assignment.rules]]
name = "everyone else"
op = "accept"
`;

/**
 * Start `flex-bridge serve` against the emulator. Resolves with `{ child, url }` once it
 * answers `/healthz`. Start it again with the same arguments to restart it (same journal).
 */
export async function startBridge({ bin, dir, port, emulator, corsOrigins, policy = TEST_POLICY, instanceId = 'browser-tests' }) {
  const policyPath = join(dir, 'policy.toml');
  writeFileSync(policyPath, policy);
  const { state } = emulator;
  const env = {
    ...process.env,
    TWILIO_ACCOUNT_SID: state.account_sid,
    TWILIO_AUTH_TOKEN: state.auth_token,
    FLEX_BRIDGE_WORKSPACE_SID: state.workspace_sid,
    FLEX_BRIDGE_SYNC_SERVICE_SID: state.sync_service_sid,
    FLEX_BRIDGE_TWILIO_BASE_URL: emulator.url,
    FLEX_BRIDGE_JOURNAL: join(dir, 'journal.db'),
    FLEX_BRIDGE_POLICY: policyPath,
    FLEX_BRIDGE_CORS_ORIGINS: corsOrigins.join(','),
    FLEX_BRIDGE_HTTP_TIMEOUT: '20',
    FLEX_BRIDGE_INSTANCE_ID: instanceId,
    // The URL the emulator's callbacks are signed for (required outside development).
    FLEX_BRIDGE_PUBLIC_URL: `http://127.0.0.1:${port}`,
  };
  for (const name of ['TWILIO_API_KEY', 'TWILIO_API_SECRET', 'FLEX_BRIDGE_DEV', 'FLEX_BRIDGE_WEBHOOK_SECRET']) delete env[name];
  const child = new Child('bridge', bin, ['serve', '--host', '127.0.0.1', '--port', String(port)], { env });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/healthz`, child, 'the bridge to answer /healthz');
  return { child, url };
}

// ------------------------------------------------------------------------------ the page server

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.ts': 'text/plain; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
};

/**
 * A static server for the test page (test/browser/page/) and the package's dist/, plus what a
 * Flex deployment's back end would give the page:
 * - `GET /test/config`: `{ bridgeUrl, emulatorUrl, workerSid }`;
 * - `GET /test/token?ttl=S`: a fresh Flex token for the worker (the emulator's admin API);
 * - `GET /test/reservations`: the worker's reservations as TaskRouter has them, with each
 *   task's channel: the fake Flex's view of its TaskRouter connection.
 */
export async function startPageServer({ port, admin, config }) {
  const roots = {
    '/dist/': join(CLIENT_DIR, 'dist'),
    '/page/': join(CLIENT_DIR, 'test', 'browser', 'page'),
  };
  const channels = new Map();
  const send = (res, status, body, type = 'application/json; charset=utf-8') => {
    res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
    res.end(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
  };
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const path = decodeURIComponent(url.pathname);
      if (path === '/' || path === '/index.html') {
        send(res, 200, readFileSync(join(roots['/page/'], 'index.html')), TYPES['.html']);
        return;
      }
      if (path === '/favicon.ico') {
        send(res, 204, '');
        return;
      }
      if (path === '/test/config') {
        send(res, 200, config);
        return;
      }
      if (path === '/test/token') {
        const ttl = Number(url.searchParams.get('ttl') ?? '3600');
        send(res, 200, await admin.token(config.workerSid, ttl));
        return;
      }
      if (path === '/test/reservations') {
        const reservations = await admin.workerReservations(config.workerSid);
        const out = [];
        for (const r of reservations) {
          if (!channels.has(r.task_sid)) {
            const task = await admin.task(r.task_sid).catch(() => undefined);
            if (task) channels.set(r.task_sid, task.task_channel_unique_name);
          }
          out.push({
            sid: r.sid,
            taskSid: r.task_sid,
            status: r.reservation_status,
            taskChannelUniqueName: channels.get(r.task_sid) ?? 'default',
            dateCreated: r.date_created,
          });
        }
        send(res, 200, { reservations: out });
        return;
      }
      for (const [prefix, root] of Object.entries(roots)) {
        if (!path.startsWith(prefix)) continue;
        const file = normalize(join(root, path.slice(prefix.length)));
        if (!file.startsWith(root + sep) || !existsSync(file) || !statSync(file).isFile()) break;
        send(res, 200, readFileSync(file), TYPES[extname(file)] ?? 'application/octet-stream');
        return;
      }
      send(res, 404, { error: `not found: ${path}` });
    } catch (error) {
      send(res, 500, { error: String(error?.message ?? error) });
    }
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', ok);
  });
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections?.();
        server.close(() => ok());
      }),
  };
}

// ------------------------------------------------------------------------------ all of it

/**
 * Emulator, bridge and page server on free ports, files in a fresh temporary directory.
 * `stop()` ends all of them (and removes the directory unless `keep`).
 */
export async function startStack({ bin, log = () => undefined } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'flex-bridge-browser-'));
  const [emulatorPort, bridgePort, pagePort] = [await freePort(), await freePort(), await freePort()];
  const bridgeUrl = `http://127.0.0.1:${bridgePort}`;
  const stack = { dir, children: [], bridge: undefined, emulator: undefined, page: undefined };
  stack.stop = async ({ keep = false } = {}) => {
    await stack.page?.close().catch(() => undefined);
    for (const child of [stack.bridge?.child, stack.emulator?.child]) await child?.stop().catch(() => undefined);
    if (!keep) rmSync(dir, { recursive: true, force: true });
  };
  try {
    log(`emulator on port ${emulatorPort}`);
    stack.emulator = await startEmulator({
      bin,
      dir,
      port: emulatorPort,
      assignmentUrl: `${bridgeUrl}/taskrouter/assignment`,
      eventUrl: `${bridgeUrl}/taskrouter/events`,
      workers: 1,
    });
    const pageUrl = `http://127.0.0.1:${pagePort}`;
    stack.startBridge = async () => {
      log(`bridge on port ${bridgePort}`);
      stack.bridge = await startBridge({ bin, dir, port: bridgePort, emulator: stack.emulator, corsOrigins: [pageUrl] });
      return stack.bridge;
    };
    await stack.startBridge();
    const workerSid = stack.emulator.state.workers[0].sid;
    stack.config = { bridgeUrl, emulatorUrl: stack.emulator.url, workerSid };
    stack.page = await startPageServer({ port: pagePort, admin: stack.emulator.admin, config: stack.config });
    return stack;
  } catch (error) {
    await stack.stop({ keep: true });
    error.stack_dir = dir;
    error.children = [stack.emulator?.child, stack.bridge?.child].filter(Boolean);
    throw error;
  }
}

// ------------------------------------------------------------------------------ as a script

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const bin = findBridgeBin();
  if (!bin) {
    console.error('flex-bridge not found: run `make venv` at the repository root, or set FLEX_BRIDGE_BIN');
    process.exit(1);
  }
  if (!existsSync(join(CLIENT_DIR, 'dist', 'index.js'))) {
    console.error('dist/ is missing: run `npm run build` in sync/client first');
    process.exit(1);
  }
  const stack = await startStack({ bin, log: (line) => console.log(line) });
  const { state, url } = stack.emulator;
  const basic = `${state.account_sid}:${state.auth_token}`;
  console.log(`\nthe test page:  ${stack.page.url}/`);
  console.log(`the emulator:   ${url}  (worker ${stack.config.workerSid})`);
  console.log(`the bridge:     ${stack.config.bridgeUrl}`);
  console.log('a task the bridge accepts:');
  console.log(`  curl -u ${basic} ${url}/taskrouter/v1/Workspaces/${state.workspace_sid}/Tasks --data-urlencode 'Attributes={"type":"support"}'`);
  console.log('a task for the agent to accept:');
  console.log(`  curl -u ${basic} ${url}/taskrouter/v1/Workspaces/${state.workspace_sid}/Tasks --data-urlencode 'Attributes={"route":"agent"}'`);
  console.log('the worker takes one task at a time; to free it once a task is accepted:');
  console.log(`  curl -u ${basic} ${url}/taskrouter/v1/Workspaces/${state.workspace_sid}/Tasks/WT… -d AssignmentStatus=completed -d Reason=done`);
  console.log('Ctrl-C stops everything.');
  const stop = async () => {
    await stack.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
