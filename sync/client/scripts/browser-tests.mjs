#!/usr/bin/env node
// Browser tests of @flex-bridge/client: a real Chromium runs the test page
// (test/browser/page/), which installs the package into a fake Flex, against a real
// `flex-bridge emulator` and a real `flex-bridge serve`, on 127.0.0.1 and free ports.
//
// Run after `npm run build` (`npm run test:browser` does both). Needs Chromium ($CHROMIUM,
// /usr/bin/chromium, or chromium / chromium-browser on the PATH) and the repository's venv
// ($FLEX_BRIDGE_BIN or ../../.venv/bin/flex-bridge). Screenshots go to test-results/.
//
// Nothing here measures durations: every wait is for a condition, with a timeout.

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import {
  CLIENT_DIR,
  findBridgeBin,
  findChromium,
  startStack,
  waitFor,
} from '../test/support/stack.mjs';

const CI = process.env.CI === 'true';
const RESULTS = join(CLIENT_DIR, 'test-results');
const WAIT_MS = 20_000;
const WATCHDOG_MS = 5 * 60_000;

function say(line = '') {
  process.stdout.write(`${line}\n`);
}

// ---------------------------------------------------------------------------- preconditions
const chromiumPath = findChromium();
if (!chromiumPath) {
  if (CI) {
    say('browser tests: FAILED: Chromium not found ($CHROMIUM, /usr/bin/chromium, chromium or chromium-browser on the PATH).');
    say('CI must install it: apt-get install chromium');
    process.exit(1);
  }
  say('browser tests: Chromium not found: install Debian\'s chromium: apt-get install chromium (or set $CHROMIUM).');
  say('The browser tests did not run.');
  process.exit(0);
}
const bin = findBridgeBin();
if (!bin) {
  say('browser tests: FAILED: flex-bridge not found: run `make venv` at the repository root (or set $FLEX_BRIDGE_BIN).');
  process.exit(1);
}
if (!existsSync(join(CLIENT_DIR, 'dist', 'index.js')) || !existsSync(join(CLIENT_DIR, 'dist', 'emulator.js'))) {
  say('browser tests: FAILED: dist/ is not built: run `npm run build` first (`npm run test:browser` does).');
  process.exit(1);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (error) {
  say(`browser tests: FAILED: playwright-core cannot be loaded (${error.message}); install the dev dependencies (npm ci in sync/).`);
  process.exit(1);
}
mkdirSync(RESULTS, { recursive: true });

// ---------------------------------------------------------------------------- the run
let stack;
let browser;
const pageLog = [];
let cleaning;

async function cleanup() {
  cleaning ??= (async () => {
    await browser?.close().catch(() => undefined);
    await stack?.stop().catch(() => undefined);
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    say(`browser tests: ${signal}: stopping`);
    void cleanup().finally(() => process.exit(1));
  });
}
const watchdog = setTimeout(() => {
  say(`browser tests: FAILED: still running after ${WATCHDOG_MS / 1000} s; stopping`);
  printLogs();
  void cleanup().finally(() => process.exit(1));
}, WATCHDOG_MS);

function printLogs() {
  for (const child of [stack?.emulator?.child, stack?.bridge?.child]) {
    if (!child) continue;
    say(`---- ${child.name} (pid ${child.pid}, ${child.running ? 'running' : `exited ${child.exitCode}`}): last lines`);
    say(child.tail(120));
  }
  say('---- page console: last lines');
  say(pageLog.slice(-80).join('\n'));
  say('----');
}

function assert(condition, message, detail) {
  if (!condition) {
    const extra = detail === undefined ? '' : `\n    ${JSON.stringify(detail)}`;
    throw new Error(`${message}${extra}`);
  }
}

// ---------------------------------------------------------------------------- page helpers
async function openPage(context, path = '/?ttl=600') {
  const page = await context.newPage();
  page.on('console', (message) => pageLog.push(`[${message.type()}] ${message.text()}`));
  page.on('pageerror', (error) => pageLog.push(`[pageerror] ${error.message}`));
  await page.goto(`${stack.page.url}${path}`);
  await waitReady(page);
  return page;
}

async function waitReady(page) {
  await page.waitForFunction(() => window.testApp?.ready === true || window.testApp?.error, undefined, {
    timeout: WAIT_MS,
  });
  const error = await page.evaluate(() => window.testApp.error);
  assert(!error, 'the page failed to start', error);
}

/** What the page shows and knows about one reservation. */
function rowState(page, sid) {
  return page.evaluate((s) => {
    const row = document.querySelector(`tr[data-sid="${s}"]`);
    const text = (name) => row?.querySelector(`.${name}`)?.textContent ?? null;
    const app = window.testApp;
    return {
      shown: Boolean(row),
      status: text('status'),
      indication: text('indication'),
      decision: text('decision'),
      flex: text('flex'),
      item: app.handle?.current(s) ?? null,
      history: app.history[s] ?? [],
      clicks: app.clicks.filter((c) => c.sid === s),
      ownAccepts: app.ownAccepts.filter((a) => a.sid === s),
      notifications: app.notifications.filter((n) => n.sid === s),
      snapshot: app.snapshot[s] ?? null,
      syncState: app.sync?.connectionState ?? null,
      syncEvents: app.syncEvents,
    };
  }, sid);
}

/** Waits until the row's cell `name` shows `value`. */
async function waitCell(page, sid, name, value, timeout = WAIT_MS) {
  try {
    await page.waitForFunction(
      ([s, n, v]) => document.querySelector(`tr[data-sid="${s}"] .${n}`)?.textContent === v,
      [sid, name, value],
      { timeout, polling: 'raf' },
    );
  } catch (error) {
    const state = await rowState(page, sid).catch(() => undefined);
    throw new Error(`${sid}: ${name} never showed ${JSON.stringify(value)}; the row: ${JSON.stringify(state)}`);
  }
}

/** Waits until the last click on the reservation has an outcome. */
async function waitClickDone(page, sid) {
  await page.waitForFunction(
    (s) => {
      const clicks = window.testApp.clicks.filter((c) => c.sid === s);
      return clicks.length > 0 && clicks[clicks.length - 1].outcome !== null;
    },
    sid,
    { timeout: WAIT_MS },
  );
  const state = await rowState(page, sid);
  return state.clicks[state.clicks.length - 1];
}

async function clickAccept(page, sid) {
  await page.click(`tr[data-sid="${sid}"] button.accept`);
}

// ---------------------------------------------------------------------------- stack helpers
/** A new task and its pending reservation (for the one seeded worker). */
async function newTask(attributes) {
  const { admin } = stack.emulator;
  const task = await admin.createTask(attributes);
  const reservation = await waitFor(
    async () => (await admin.taskReservations(task.sid)).find((r) => r.reservation_status === 'pending'),
    { what: `a reservation for ${task.sid}` },
  );
  return { taskSid: task.sid, sid: reservation.sid };
}

/** Frees the worker: completes the task if it was assigned, else cancels it. */
async function finishTask(taskSid) {
  const { admin } = stack.emulator;
  const task = await admin.task(taskSid).catch(() => undefined);
  if (!task) return;
  if (task.assignment_status === 'assigned' || task.assignment_status === 'wrapping') {
    await admin.completeTask(taskSid).catch(() => undefined);
  } else if (task.assignment_status === 'pending' || task.assignment_status === 'reserved') {
    await admin.cancelTask(taskSid).catch(() => undefined);
  }
}

async function acceptsOf(sid, since) {
  return stack.emulator.admin.acceptsOf(sid, since);
}

/** A fault that slows the bridge's REST updates of reservations (Flex's SDK accept is not slowed). */
function slowReservationUpdates(latencyMs) {
  return stack.emulator.admin.setFaults([
    { product: 'taskrouter', method: 'POST', path: '/Reservations/WR', latency_ms: latencyMs },
  ]);
}

// ---------------------------------------------------------------------------- scenarios
const scenarios = [
  {
    name: 'd. token refresh, then the agent accepts through the bridge',
    async run(ctx) {
      const { page } = ctx;
      const { admin } = stack.emulator;
      const [oldToken] = await page.evaluate(() => window.testApp.tokens);
      // Flex refreshes the token: its Sync client takes it, then 'tokenUpdated'.
      await page.evaluate(() => window.testApp.refreshToken(3600));
      // The old token (ttl 600) runs out on the emulator clock; the Sync connection and the
      // bridge calls must go on with the new one.
      await admin.advanceClock(601);
      const probe = await fetch(`${stack.emulator.url}/sdk/sync/v1/Maps`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${oldToken}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ id: 'probe', mode: 'open_or_create' }),
      });
      assert(probe.status === 401, 'the old token has expired on the emulator', probe.status);

      const since = await admin.lastSeq();
      const { taskSid, sid } = await newTask({ type: 'support', route: 'agent' });
      ctx.tasks.push(taskSid);
      ctx.sid = sid;
      await waitCell(page, sid, 'decision', 'accept');
      await waitCell(page, sid, 'flex', 'pending');
      await clickAccept(page, sid);
      const click = await waitClickDone(page, sid);
      await waitCell(page, sid, 'status', 'accepted');
      await waitCell(page, sid, 'flex', 'accepted'); // and TaskRouter agrees
      const state = await rowState(page, sid);
      assert(click.decision === 'accept', 'the click found nothing in flight', click);
      assert(click.outcome?.aborted === true, "Flex's own accept was cancelled: the bridge accepted", click);
      assert(state.item?.phase === 'applied' && state.item?.source === 'plugin', 'the item: applied, by the plugin', state.item);
      assert(state.item?.reservation_status === 'accepted', 'the item says accepted', state.item);
      assert(state.history.some((h) => h.indication === 'accepting…'), 'the page showed "accepting…"', state.history);
      assert(state.ownAccepts.length === 0, "Flex's own accept never ran", state.ownAccepts);
      const accepts = await acceptsOf(sid, since);
      assert(accepts.length === 1, 'exactly one accept in the emulator log', accepts);
      assert(accepts[0].via !== 'sdk' && accepts[0].status === 200, 'the accept was the bridge\'s, and it took', accepts[0]);
      assert(state.syncState === 'connected', 'the Sync connection is up', state.syncState);
      const bad = state.syncEvents.filter((e) => e.event === 'tokenExpired' || e.state === 'denied');
      assert(bad.length === 0, 'the Sync connection never saw its token expire', state.syncEvents);
      return `accepted by the bridge with the refreshed token; 1 accept (${accepts[0].path.split('/').slice(-1)[0]})`;
    },
  },
  {
    name: "a. the bridge's policy accepts while the agent clicks Accept",
    async run(ctx) {
      const { page } = ctx;
      const { admin } = stack.emulator;
      await slowReservationUpdates(3000);
      const since = await admin.lastSeq();
      const { taskSid, sid } = await newTask({ type: 'support' });
      ctx.tasks.push(taskSid);
      ctx.sid = sid;
      // The bridge announced its accept; it is slowed, so the item stays pending.
      await waitCell(page, sid, 'indication', 'accepting…');
      await clickAccept(page, sid);
      const click = await waitClickDone(page, sid);
      await waitCell(page, sid, 'status', 'accepted');
      await waitCell(page, sid, 'flex', 'accepted'); // and TaskRouter agrees
      await admin.clearFaults();
      const state = await rowState(page, sid);
      assert(click.phase === 'pending' && click.decision === 'wait', 'the click landed while the item was pending', click);
      assert(click.outcome?.aborted === true, "the guard cancelled Flex's own accept", click);
      assert(state.item?.phase === 'applied' && state.item?.source === 'policy', 'the item: applied, by the policy', state.item);
      const shown = state.history.map((h) => h.indication || h.status);
      const accepting = shown.indexOf('accepting…');
      assert(accepting >= 0 && shown.indexOf('accepted', accepting) > accepting, 'the page showed "accepting…", then accepted', state.history);
      assert(state.ownAccepts.length === 0, "Flex's own accept never ran", state.ownAccepts);
      const accepts = await acceptsOf(sid, since);
      assert(accepts.length === 1, 'exactly one accept in the emulator log', accepts);
      assert(accepts[0].via !== 'sdk', "the one accept is the bridge's", accepts[0]);
      return `click while pending waited, then cancelled Flex's accept; 1 accept`;
    },
  },
  {
    name: 'c. a page reload while the bridge is accepting',
    async run(ctx) {
      const { admin } = stack.emulator;
      await slowReservationUpdates(8000);
      const since = await admin.lastSeq();
      const { taskSid, sid } = await newTask({ type: 'support' });
      ctx.tasks.push(taskSid);
      ctx.sid = sid;
      await waitCell(ctx.page, sid, 'indication', 'accepting…');
      await ctx.page.reload();
      await waitReady(ctx.page);
      const page = ctx.page;
      await waitCell(page, sid, 'indication', 'accepting…');
      let state = await rowState(page, sid);
      assert(state.snapshot?.phase === 'pending', 'after the reload, the snapshot had the item pending', state.snapshot);
      assert(state.history[0]?.indication === 'accepting…', 'the first thing the reloaded page showed was "accepting…"', state.history);
      // The agent clicks Accept on the reloaded page, still while the bridge acts.
      await clickAccept(page, sid);
      const click = await waitClickDone(page, sid);
      await waitCell(page, sid, 'status', 'accepted');
      await waitCell(page, sid, 'flex', 'accepted'); // and TaskRouter agrees
      await admin.clearFaults();
      state = await rowState(page, sid);
      assert(click.decision === 'wait', 'the click after the reload waited for the bridge', click);
      assert(click.outcome?.aborted === true, "the guard cancelled Flex's own accept", click);
      assert(state.item?.phase === 'applied', 'the item settled applied', state.item);
      assert(state.ownAccepts.length === 0, "Flex's own accept never ran", state.ownAccepts);
      const accepts = await acceptsOf(sid, since);
      assert(accepts.length === 1, 'exactly one accept in the emulator log', accepts);
      return 'the reloaded page showed "accepting…" from the snapshot, then accepted; 1 accept';
    },
  },
  {
    name: 'b. the bridge is stopped: Flex accepts on its own',
    async run(ctx) {
      const { page } = ctx;
      const { admin } = stack.emulator;
      await stack.bridge.child.stop('SIGKILL');
      const since = await admin.lastSeq();
      // TaskRouter offers the task; its assignment callback finds no bridge, so the
      // reservation stays pending for the agent.
      const { taskSid, sid } = await newTask({ type: 'support' });
      ctx.tasks.push(taskSid);
      ctx.sid = sid;
      const callbacks = await waitFor(
        async () => {
          const hooks = (await admin.log('webhook', since)).filter(
            (e) => e.webhook === 'assignment' && e.params?.ReservationSid === sid,
          );
          return hooks.length > 0 ? hooks : undefined;
        },
        { what: `the assignment callback of ${sid}` },
      );
      assert(callbacks.every((e) => e.status !== 200), 'the assignment callback failed: no bridge', callbacks);
      await waitCell(page, sid, 'flex', 'pending');
      await waitCell(page, sid, 'decision', 'accept');
      await clickAccept(page, sid);
      const click = await waitClickDone(page, sid);
      await waitCell(page, sid, 'status', 'accepted');
      await waitCell(page, sid, 'flex', 'accepted'); // and TaskRouter agrees
      const state = await rowState(page, sid);
      assert(click.outcome?.aborted === false, "Flex's own accept ran (whenBridgeUnreachable 'flex')", click);
      assert(state.ownAccepts.length === 1 && state.ownAccepts[0].status === 200, "Flex's own accept took", state.ownAccepts);
      assert(state.notifications.length === 0, 'the agent was not told of an error', state.notifications);
      const accepts = await acceptsOf(sid, since);
      assert(accepts.length === 1, 'exactly one accept in the emulator log', accepts);
      assert(accepts[0].via === 'sdk' && accepts[0].status === 200, 'the accept is Flex\'s own, through the SDK surface', accepts[0]);
      const reservation = await admin.reservation(taskSid, sid);
      assert(reservation.reservation_status === 'accepted', 'TaskRouter has it accepted', reservation);
      return "the bridge unreachable, Flex's own accept ran; 1 accept (via sdk)";
    },
  },
];

// ---------------------------------------------------------------------------- main
let failed = 0;
let passed = 0;
try {
  say(`browser tests: Chromium ${chromiumPath}, flex-bridge ${bin}`);
  stack = await startStack({ bin });
  say(`browser tests: emulator ${stack.emulator.url}, bridge ${stack.config.bridgeUrl}, page ${stack.page.url}`);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 640 } });
  const ctx = { page: await openPage(context), tasks: [] };
  for (const [index, scenario] of scenarios.entries()) {
    ctx.sid = undefined;
    const shot = join(RESULTS, `${index + 1}-${scenario.name.split('.')[0]}.png`);
    let outcome;
    try {
      const detail = await scenario.run(ctx);
      passed += 1;
      outcome = `ok   ${scenario.name}: ${detail}`;
    } catch (error) {
      failed += 1;
      outcome = `FAIL ${scenario.name}: ${error.message}`;
    }
    await ctx.page.screenshot({ path: shot, fullPage: true }).then(
      () => say(`${outcome}\n     screenshot: ${shot}`),
      (error) => say(`${outcome}\n     (no screenshot: ${error.message})`),
    );
    await stack.emulator.admin.clearFaults().catch(() => undefined);
    for (const taskSid of ctx.tasks.splice(0)) await finishTask(taskSid);
  }
} catch (error) {
  failed += 1;
  say(`FAIL browser tests could not run: ${error.stack ?? error.message}`);
}
if (failed > 0) printLogs();
clearTimeout(watchdog);
await cleanup();
say(`browser-tests: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
