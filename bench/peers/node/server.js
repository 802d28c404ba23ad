// The bench's Node.js peer: the usual approach as a Twilio Function would do it, on Express
// with the official `twilio` package. On each assignment callback, inline:
//
//   1. check the signature (twilio.validateRequest);
//   2. create the worker's map `flex-bridge.worker.<WK>` if this process has not seen it yet
//      (a 409 from another process is fine);
//   3. announce: write the item the bridge writes, phase `pending`;
//   4. accept the reservation over TaskRouter REST;
//   5. settle the item (`applied`, or `failed` with TaskRouter's error), If-Match the revision
//      from step 3;
//   6. reply `{}`.
//
// The same job as the Flask baseline (bench/baseline/app.py), request for request. The client
// keeps the package's defaults (keep-alive agent, no auto-retry), with one change: a
// RequestClient subclass sends `https://<product>.twilio.com/<path>` to
// `<FLEX_BRIDGE_TWILIO_BASE_URL>/<product>/<path>` (the emulator's address scheme), through an
// http.Agent with the options the package gives its https.Agent.
//
// Run: node server.js --host 127.0.0.1 --port P, with TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
// FLEX_BRIDGE_WORKSPACE_SID, FLEX_BRIDGE_SYNC_SERVICE_SID, FLEX_BRIDGE_TWILIO_BASE_URL and
// optionally FLEX_BRIDGE_PUBLIC_URL (the URL the signature covers, when behind a proxy).

"use strict";

const crypto = require("node:crypto");
const http = require("node:http");
const { parseArgs } = require("node:util");

const express = require("express");
const twilio = require("twilio");

const ITEM_TTL = 86_400; // the bridge's default item TTL, sent on every write as the bridge does
const BACKLOG = 1024; // the bridge's listen backlog: no 1-s SYN retransmits under a burst

class LocalRequestClient extends twilio.RequestClient {
  constructor(baseUrl, opts = {}) {
    super(opts);
    this.baseUrl = new URL(baseUrl.replace(/\/+$/, ""));
    // The package builds an https.Agent from these options (its defaults: keep-alive, 20
    // sockets per host, 100 in all, 5 kept free); the emulator speaks plain HTTP.
    this.axios.defaults.httpAgent = new http.Agent({
      keepAlive: opts.keepAlive !== false,
      maxSockets: opts.maxSockets || 20,
      maxTotalSockets: opts.maxTotalSockets || 100,
      maxFreeSockets: opts.maxFreeSockets || 5,
      timeout: opts.timeout || 30_000,
    });
  }

  rewrite(uri) {
    const url = new URL(uri);
    if (!url.hostname.endsWith(".twilio.com")) return uri;
    const product = url.hostname.split(".", 1)[0];
    const base = this.baseUrl;
    const path = base.pathname.replace(/\/+$/, "");
    return `${base.protocol}//${base.host}${path}/${product}${url.pathname}${url.search}`;
  }

  request(opts) {
    return super.request({ ...opts, uri: this.rewrite(opts.uri) });
  }
}

function config(env) {
  const names = [
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "FLEX_BRIDGE_WORKSPACE_SID",
    "FLEX_BRIDGE_SYNC_SERVICE_SID",
  ];
  const missing = names.filter((name) => !env[name]);
  if (missing.length) {
    console.error(`bench node peer: missing ${missing.join(", ")}`);
    process.exit(2);
  }
  return {
    accountSid: env.TWILIO_ACCOUNT_SID,
    authToken: env.TWILIO_AUTH_TOKEN,
    workspaceSid: env.FLEX_BRIDGE_WORKSPACE_SID,
    syncServiceSid: env.FLEX_BRIDGE_SYNC_SERVICE_SID,
    baseUrl: env.FLEX_BRIDGE_TWILIO_BASE_URL || null,
    publicUrl: (env.FLEX_BRIDGE_PUBLIC_URL || "").replace(/\/+$/, "") || null,
  };
}

// The same shape as the bridge's ids, so the item passes the channel's schema.
function intentId(now) {
  return `in_${now.toString(16).padStart(12, "0")}${crypto.randomBytes(5).toString("hex")}`;
}

function iso(now) {
  return new Date(now).toISOString(); // 2024-01-01T00:00:00.000Z, as the baseline writes
}

function createApp(cfg) {
  const httpClient = cfg.baseUrl ? new LocalRequestClient(cfg.baseUrl) : undefined;
  const client = twilio(cfg.accountSid, cfg.authToken, { httpClient });
  const workspace = client.taskrouter.v1.workspaces(cfg.workspaceSid);
  const sync = client.sync.v1.services(cfg.syncServiceSid);
  const knownMaps = new Set(); // maps this process created or found: one call per worker

  async function ensureMap(name) {
    if (knownMaps.has(name)) return;
    try {
      await sync.syncMaps.create({ uniqueName: name });
    } catch (err) {
      if (err.status !== 409) throw err; // 409: it exists already, which is what we want
    }
    knownMaps.add(name);
  }

  const app = express();
  app.disable("x-powered-by");
  app.disable("etag");
  app.use(express.urlencoded({ extended: false }));

  app.get("/healthz", (req, res) => res.json({ ok: true }));

  app.post("/taskrouter/assignment", async (req, res) => {
    const form = req.body || {};
    const url = (cfg.publicUrl || `${req.protocol}://${req.get("host")}`) + req.originalUrl;
    const signature = req.get("X-Twilio-Signature") || "";
    if (!twilio.validateRequest(cfg.authToken, signature, url, form)) {
      return res.status(403).json({ error: "invalid signature" });
    }
    const reservationSid = form.ReservationSid || "";
    const taskSid = form.TaskSid || "";
    const workerSid = form.WorkerSid || "";
    if (!(reservationSid && taskSid && workerSid)) {
      return res.status(400).json({ error: "missing parameters" });
    }

    // 1. Announce on the worker's Sync map that the server is accepting.
    const name = `flex-bridge.worker.${workerSid}`;
    const now = Date.now();
    const item = {
      v: 1,
      intent_id: intentId(now),
      op: "accept",
      phase: "pending",
      task_sid: taskSid,
      reservation_sid: reservationSid,
      worker_sid: workerSid,
      source: "policy",
      requested_at: iso(now),
      updated_at: iso(now),
      reservation_status: null,
      error: null,
    };
    const items = sync.syncMaps(name).syncMapItems;
    let created;
    try {
      await ensureMap(name);
      created = await items.create({ key: reservationSid, data: item, itemTtl: ITEM_TTL });
    } catch (err) {
      // Not announced (or a retried callback whose item exists): change nothing, leave the
      // reservation to the agent.
      console.warn(`${reservationSid}: announce failed: ${err.message}`);
      return res.json({});
    }

    // 2. Accept over REST.
    try {
      const reservation = await workspace
        .tasks(taskSid)
        .reservations(reservationSid)
        .update({ reservationStatus: "accepted" });
      item.phase = "applied";
      item.reservation_status = reservation.reservationStatus;
    } catch (err) {
      console.warn(`${reservationSid}: accept failed: ${err.message}`);
      item.phase = "failed";
      item.error = { code: err.code ?? null, message: String(err.message).slice(0, 1024) };
    }

    // 3. Settle the item, conditional on the revision the announce wrote.
    item.updated_at = iso(Date.now());
    try {
      await items(reservationSid).update({
        data: item,
        ifMatch: String(created.revision),
        itemTtl: ITEM_TTL,
      });
    } catch (err) {
      console.warn(`${reservationSid}: settle failed: ${err.message}`);
    }
    return res.json({});
  });

  return app;
}

function main() {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8900" },
    },
  });
  const app = createApp(config(process.env));
  const server = http.createServer(app);
  server.listen({ host: values.host, port: Number(values.port), backlog: BACKLOG }, () => {
    const { address, port } = server.address();
    console.log(`node peer listening on http://${address}:${port}`);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (require.main === module) main();

module.exports = { LocalRequestClient, createApp };
