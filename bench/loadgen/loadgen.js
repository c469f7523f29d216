'use strict';
// fleetchat benchmark load generator (PROTOCOL.md v1 subset, websocket transport only).
//
//   node loadgen.js '<json config>'
//
// Modes
//   room: `clients` sockets join one room; the first `senders` of them send
//         `message` events, either at `rate` msg/s each (open loop) or, with
//         rate 0, as fast as their acks allow with `window` sends in flight.
//         Every socket in the room (senders included) must receive every acked
//         message: deliveries, loss, duplicates and delivery latency are counted.
//   idle: open up to `count` sockets to `urls[0]` within `duration` seconds,
//         report how many are held, wait for a line "release" on stdin (or
//         `hold` seconds), check they are still held, close them.
//
// The coordinator (this file without --worker) forks `workers` child processes,
// splits the clients among them and merges their results. It writes JSON lines
// to stdout: {"event":"ready"|"held"|"result", ...}; logs go to stderr.
// `client` picks the Socket.IO client: "lean" (lean-client.js, the default, so that
// the load generator's own CPU per delivery stays small beside the servers') or
// "socketio" (socket.io-client 4, as in bench/README sections (a)-(o)).
// Latency uses performance.timeOrigin + performance.now(): wall-clock based with
// sub-millisecond resolution, comparable between the processes of one run.

const { fork } = require('child_process');
const { performance } = require('perf_hooks');

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => process.stderr.write(`[loadgen${process.env.LOADGEN_WORKER ? ' w' + process.env.LOADGEN_WORKER : ''}] ${args.join(' ')}\n`);

// Latency histogram: 0.1 ms buckets up to 30 s, one overflow bucket.
const BUCKET_MS = 0.1;
const NBUCKETS = 300001;

class Hist {
  constructor() {
    this.b = new Uint32Array(NBUCKETS);
    this.n = 0;
    this.sum = 0;
    this.max = 0;
  }
  add(ms) {
    if (ms < 0) ms = 0;
    let i = Math.floor(ms / BUCKET_MS);
    if (i >= NBUCKETS) i = NBUCKETS - 1;
    this.b[i]++;
    this.n++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }
  toSparse() {
    const out = [];
    for (let i = 0; i < NBUCKETS; i++) if (this.b[i]) out.push([i, this.b[i]]);
    return { buckets: out, n: this.n, sum: this.sum, max: this.max };
  }
  merge(s) {
    for (const [i, c] of s.buckets) this.b[i] += c;
    this.n += s.n;
    this.sum += s.sum;
    if (s.max > this.max) this.max = s.max;
  }
  pct(p) {
    if (!this.n) return null;
    const target = Math.max(1, Math.ceil(this.n * p));
    let acc = 0;
    for (let i = 0; i < NBUCKETS; i++) {
      acc += this.b[i];
      if (acc >= target) return Math.round((i + 0.5) * BUCKET_MS * 100) / 100;
    }
    return this.max;
  }
  summary() {
    return {
      count: this.n,
      p50_ms: this.pct(0.5),
      p90_ms: this.pct(0.9),
      p99_ms: this.pct(0.99),
      p999_ms: this.pct(0.999),
      max_ms: this.n ? Math.round(this.max * 100) / 100 : null,
      mean_ms: this.n ? Math.round((this.sum / this.n) * 100) / 100 : null,
    };
  }
}

// Growable bitset-ish byte array (one byte per message number).
class Seen {
  constructor() {
    this.a = new Uint8Array(1024);
  }
  mark(n) {
    if (n >= this.a.length) {
      let len = this.a.length;
      while (len <= n) len *= 2;
      const b = new Uint8Array(len);
      b.set(this.a);
      this.a = b;
    }
    if (this.a[n]) return false;
    this.a[n] = 1;
    return true;
  }
  has(n) {
    return n < this.a.length && this.a[n] === 1;
  }
}

// ---------------------------------------------------------------- worker ----

function workerMain() {
  // The client library: 'lean' (./lean-client.js, the default: a small measuring cost)
  // or 'socketio' (socket.io-client, what a Node application would use).
  let io = null;
  const useClient = (name) => {
    if (name !== 'lean' && name !== 'socketio') throw new Error(`unknown client ${name}`);
    io = name === 'socketio' ? require('socket.io-client').io : require('./lean-client').io;
  };
  let cfg = null;
  let sockets = []; // {sock, idx, url, sender, ordinal, seen[], got, connected}
  let senderState = []; // per local sender: {ordinal, sent, failed:Set, inflight}
  let hist = null;
  let ackHist = null;
  let measureStart = 0;
  let stopAt = 0;
  let deliveriesInWindow = 0;
  let deliveriesTotal = 0;
  let duplicates = 0;
  let foreign = 0;
  let firstDelivery = Infinity;
  let lastDelivery = 0;
  let disconnects = 0;
  let running = false;

  const send = (msg) => process.send(msg);

  function openSocket(url, name, timeoutMs) {
    return new Promise((resolve) => {
      const sock = io(url, {
        transports: ['websocket'],
        auth: { name },
        reconnection: false,
        forceNew: true,
        timeout: timeoutMs,
      });
      let done = false;
      const finish = (err) => {
        if (done) return;
        done = true;
        sock.off('connect', onConnect);
        sock.off('connect_error', onError);
        resolve({ sock, err });
      };
      const onConnect = () => finish(null);
      const onError = (e) => finish(e && e.message ? e.message : String(e));
      sock.on('connect', onConnect);
      sock.on('connect_error', onError);
    });
  }

  async function pool(items, concurrency, fn, deadline) {
    let next = 0;
    const runners = [];
    for (let k = 0; k < Math.min(concurrency, items.length); k++) {
      runners.push((async () => {
        while (next < items.length && now() < deadline) {
          const item = items[next++];
          await fn(item);
        }
      })());
    }
    await Promise.all(runners);
  }

  // ---- room mode ----
  async function roomSetup(msg) {
    cfg = msg.cfg;
    useClient(cfg.client);
    const tag = cfg.tag;
    const room = cfg.room;
    hist = new Hist();
    ackHist = new Hist();
    const errors = {};
    let connected = 0;
    let joined = 0;
    const deadline = now() + cfg.connectTimeout * 1000;
    const nSenders = cfg.senders;
    await pool(msg.clients, cfg.connectConcurrency, async (c) => {
      const { sock, err } = await openSocket(c.url, `${cfg.namePrefix}${c.idx}`, cfg.connectTimeout * 1000);
      if (err) {
        errors[err] = (errors[err] || 0) + 1;
        sock.close();
        return;
      }
      connected++;
      const entry = { sock, idx: c.idx, url: c.url, sender: c.sender, ordinal: c.ordinal, seen: [], got: 0 };
      for (let s = 0; s < nSenders; s++) entry.seen.push(new Seen());
      sock.on('disconnect', () => { if (running) disconnects++; });
      sock.on('message', (m) => {
        const t = now();
        if (!m || m.room !== room || typeof m.client_id !== 'string') { foreign++; return; }
        const parts = m.client_id.split('.');
        if (parts.length !== 3 || parts[0] !== tag) { foreign++; return; }
        const s = parts[1] | 0;
        const n = parts[2] | 0;
        if (s < 0 || s >= nSenders) { foreign++; return; }
        if (!entry.seen[s].mark(n)) { duplicates++; return; }
        entry.got++;
        deliveriesTotal++;
        if (t < firstDelivery) firstDelivery = t;
        if (t > lastDelivery) lastDelivery = t;
        if (t >= measureStart && t <= stopAt) deliveriesInWindow++;
        const ts = parseFloat(m.text);
        if (ts >= measureStart) hist.add(t - ts);
      });
      let ack;
      try {
        ack = await sock.timeout(cfg.connectTimeout * 1000).emitWithAck('join', { room });
      } catch (e) {
        errors['join timeout'] = (errors['join timeout'] || 0) + 1;
        sockets.push(entry);
        return;
      }
      if (!ack || ack.ok !== true) {
        const k = `join refused: ${ack && (ack.error || JSON.stringify(ack))}`;
        errors[k] = (errors[k] || 0) + 1;
      } else {
        joined++;
      }
      sockets.push(entry);
    }, deadline);
    for (const e of sockets) {
      if (e.sender) senderState.push({ ordinal: e.ordinal, sock: e.sock, sent: 0, failed: new Set(), inflight: 0, ackErrors: {} });
    }
    send({ type: 'ready', connected, joined, errors, senders: senderState.length });
  }

  function sendOne(st, textPad) {
    const n = st.sent++;
    const t = now();
    st.inflight++;
    const data = { room: cfg.room, text: `${t.toFixed(3)}${textPad}`, client_id: `${cfg.tag}.${st.ordinal}.${n}` };
    return new Promise((resolve) => {
      st.sock.timeout(cfg.ackTimeout * 1000).emit('message', data, (err, ack) => {
        st.inflight--;
        if (err || !ack || ack.ok !== true) {
          st.failed.add(n);
          const k = err ? 'ack timeout' : `nack: ${ack && (ack.error || JSON.stringify(ack))}`;
          st.ackErrors[k] = (st.ackErrors[k] || 0) + 1;
        } else if (t >= measureStart) {
          ackHist.add(now() - t);
        }
        resolve();
      });
    });
  }

  async function roomRun(msg) {
    measureStart = msg.measureStart;
    stopAt = msg.stopAt;
    const startAt = msg.startAt;
    const pad = cfg.textBytes > 24 ? ' ' + 'x'.repeat(cfg.textBytes - 24) : '';
    running = true;
    await sleep(Math.max(0, startAt - now()));
    const loops = [];
    for (const st of senderState) {
      if (cfg.rate > 0) {
        const interval = 1000 / cfg.rate;
        const offset = (st.ordinal * interval) / cfg.senders;
        loops.push((async () => {
          const pending = [];
          let k = 0;
          for (;;) {
            const due = startAt + offset + k * interval;
            if (due >= stopAt) break;
            const wait = due - now();
            if (wait > 1) await sleep(wait);
            pending.push(sendOne(st, pad));
            k++;
          }
          await Promise.all(pending);
        })());
      } else {
        for (let w = 0; w < cfg.window; w++) {
          loops.push((async () => {
            while (now() < stopAt) await sendOne(st, pad);
          })());
        }
      }
    }
    await Promise.all(loops);
    const acks = senderState.map((st) => ({ ordinal: st.ordinal, sent: st.sent, failed: [...st.failed], ackErrors: st.ackErrors }));
    send({ type: 'sent', acks });
  }

  async function roomDrain(msg) {
    // msg.acks: [{ordinal, sent, failed:[...]}] for every sender of the run
    const ackInfo = msg.acks;
    let expected = 0;
    for (const a of ackInfo) expected += a.sent - a.failed.length;
    const deadline = now() + cfg.drainTimeout * 1000;
    while (now() < deadline) {
      if (sockets.every((e) => e.got >= expected)) break;
      await sleep(20);
    }
    running = false;
    let missing = 0;
    let receiversWithLoss = 0;
    let maxMissing = 0;
    for (const e of sockets) {
      let miss = 0;
      for (const a of ackInfo) {
        const failed = new Set(a.failed);
        const seen = e.seen[a.ordinal];
        for (let n = 0; n < a.sent; n++) {
          if (!failed.has(n) && !seen.has(n)) miss++;
        }
      }
      missing += miss;
      if (miss) receiversWithLoss++;
      if (miss > maxMissing) maxMissing = miss;
    }
    send({
      type: 'result',
      receivers: sockets.length,
      deliveriesTotal,
      deliveriesInWindow,
      duplicates,
      foreign,
      missing,
      receiversWithLoss,
      maxMissing,
      disconnects,
      firstDelivery: firstDelivery === Infinity ? null : firstDelivery,
      lastDelivery: lastDelivery || null,
      hist: hist.toSparse(),
      ackHist: ackHist.toSparse(),
      cpu: process.cpuUsage(), // this worker's own CPU time since it started, microseconds
    });
  }

  // ---- idle mode ----
  async function idleOpen(msg) {
    cfg = msg.cfg;
    useClient(cfg.client);
    const errors = {};
    let failed = 0;
    let attempts = 0;
    const t0 = now();
    const deadline = t0 + cfg.duration * 1000;
    const items = [];
    for (let k = 0; k < msg.count; k++) items.push(msg.base + k);
    let stop = false;
    await pool(items, cfg.concurrency, async (idx) => {
      if (stop) return;
      attempts++;
      const remaining = Math.max(1000, deadline - now());
      const { sock, err } = await openSocket(cfg.urls[0], `${cfg.namePrefix}${idx}`, Math.min(remaining, cfg.connectTimeout * 1000));
      if (err) {
        failed++;
        errors[err] = (errors[err] || 0) + 1;
        sock.close();
        if (failed >= cfg.maxFailures) stop = true;
        return;
      }
      const entry = { sock, connected: true };
      sock.on('disconnect', () => { entry.connected = false; });
      sockets.push(entry);
      if (cfg.join) {
        try { await sock.timeout(cfg.connectTimeout * 1000).emitWithAck('join', { room: cfg.room }); } catch (e) { /* counted as held without room */ }
      }
    }, deadline);
    const held = sockets.filter((e) => e.connected).length;
    send({ type: 'held', held, attempts, failed, errors, elapsed: (now() - t0) / 1000 });
  }

  function idleCheck() {
    const held = sockets.filter((e) => e.connected).length;
    send({ type: 'checked', held });
  }

  process.on('message', (msg) => {
    const h = {
      roomSetup, roomRun, roomDrain, idleOpen, idleCheck,
      close: () => {
        for (const e of sockets) e.sock.close();
        setTimeout(() => process.exit(0), 50);
      },
    }[msg.type];
    if (!h) { log('unknown message', msg.type); return; }
    Promise.resolve(h(msg)).catch((e) => {
      log('error in', msg.type, e && e.stack ? e.stack : String(e));
      send({ type: 'error', error: String(e) });
    });
  });
}

// ----------------------------------------------------------- coordinator ----

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const DEFAULTS = {
  mode: 'room',
  client: 'lean',
  urls: ['http://127.0.0.1:8000'],
  room: 'bench',
  clients: 200,
  senders: 5,
  rate: 20,
  window: 1,
  duration: 10,
  warmup: 1,
  textBytes: 32,
  workers: 1,
  connectConcurrency: 100,
  connectTimeout: 20,
  ackTimeout: 10,
  drainTimeout: 10,
  namePrefix: 'u',
  // idle
  count: 20000,
  concurrency: 200,
  maxFailures: 500,
  hold: 60,
  join: false,
};

function mergeCounts(into, from) {
  for (const [k, v] of Object.entries(from || {})) into[k] = (into[k] || 0) + v;
  return into;
}

async function coordinatorMain() {
  const arg = process.argv[2];
  if (!arg) {
    process.stderr.write('usage: node loadgen.js \'{"mode":"room","urls":[...],...}\'\n');
    process.exit(2);
  }
  const cfg = Object.assign({}, DEFAULTS, JSON.parse(arg));
  cfg.tag = cfg.tag || Math.random().toString(36).slice(2, 10);
  const nw = Math.max(1, cfg.workers | 0);
  const workers = [];
  const inbox = [];
  for (let w = 0; w < nw; w++) {
    const child = fork(__filename, ['--worker'], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: Object.assign({}, process.env, { LOADGEN_WORKER: String(w) }),
    });
    const q = { msgs: [], waiters: [] };
    inbox.push(q);
    child.on('message', (m) => {
      if (m.type === 'error') log(`worker ${w} error: ${m.error}`);
      const waiter = q.waiters.findIndex((x) => x.type === m.type);
      if (waiter >= 0) q.waiters.splice(waiter, 1)[0].resolve(m);
      else q.msgs.push(m);
    });
    child.on('exit', (code) => {
      if (code) log(`worker ${w} exited with ${code}`);
      for (const x of q.waiters.splice(0)) x.resolve({ type: 'error', error: `worker exited ${code}` });
    });
    workers.push(child);
  }
  const waitFor = (w, type, timeoutMs) => new Promise((resolve) => {
    const q = inbox[w];
    const i = q.msgs.findIndex((m) => m.type === type);
    if (i >= 0) { resolve(q.msgs.splice(i, 1)[0]); return; }
    const waiter = { type, resolve };
    q.waiters.push(waiter);
    setTimeout(() => {
      const k = q.waiters.indexOf(waiter);
      if (k >= 0) { q.waiters.splice(k, 1); resolve({ type: 'error', error: `timeout waiting for ${type}` }); }
    }, timeoutMs);
  });
  const all = (type, timeoutMs) => Promise.all(workers.map((_, w) => waitFor(w, type, timeoutMs)));
  const shutdown = async (code) => {
    for (const child of workers) { try { child.send({ type: 'close' }); } catch (e) { /* already gone */ } }
    await sleep(300);
    for (const child of workers) { try { child.kill(); } catch (e) { /* already gone */ } }
    process.exit(code);
  };

  if (cfg.mode === 'room') {
    const per = workers.map(() => []);
    for (let i = 0; i < cfg.clients; i++) {
      const sender = i < cfg.senders;
      per[i % nw].push({ idx: i, url: cfg.urls[i % cfg.urls.length], sender, ordinal: sender ? i : -1 });
    }
    workers.forEach((child, w) => child.send({ type: 'roomSetup', cfg, clients: per[w] }));
    const ready = await all('ready', (cfg.connectTimeout + 30) * 1000);
    const setup = { connected: 0, joined: 0, errors: {}, senders: 0 };
    for (const r of ready) {
      if (r.type === 'error') { setup.errors[r.error] = (setup.errors[r.error] || 0) + 1; continue; }
      setup.connected += r.connected; setup.joined += r.joined; setup.senders += r.senders;
      mergeCounts(setup.errors, r.errors);
    }
    emit({ event: 'ready', ...setup });
    if (setup.joined < cfg.clients || setup.senders < cfg.senders) {
      emit({ event: 'result', ok: false, error: `only ${setup.joined}/${cfg.clients} clients joined`, setup });
      return shutdown(1);
    }
    const startAt = now() + 300;
    const measureStart = startAt + cfg.warmup * 1000;
    const stopAt = measureStart + cfg.duration * 1000;
    workers.forEach((child) => child.send({ type: 'roomRun', startAt, measureStart, stopAt }));
    const sent = await all('sent', (cfg.warmup + cfg.duration + cfg.ackTimeout + 30) * 1000);
    const acks = [];
    const ackErrors = {};
    for (const s of sent) {
      if (s.type === 'error') { ackErrors[s.error] = (ackErrors[s.error] || 0) + 1; continue; }
      for (const a of s.acks) { acks.push(a); mergeCounts(ackErrors, a.ackErrors); }
    }
    workers.forEach((child) => child.send({ type: 'roomDrain', acks }));
    const results = await all('result', (cfg.drainTimeout + 60) * 1000);
    const hist = new Hist();
    const ackHist = new Hist();
    const out = {
      event: 'result', ok: true, mode: 'room', setup,
      clients: cfg.clients, senders: cfg.senders, rate: cfg.rate, window: cfg.window,
      duration_s: cfg.duration, warmup_s: cfg.warmup, workers: nw, client: cfg.client,
      sent: 0, acked: 0, ack_failures: 0, ack_errors: ackErrors,
      deliveries: 0, deliveries_in_window: 0, duplicates: 0, foreign: 0,
      missing: 0, receivers_with_loss: 0, max_missing_per_receiver: 0, disconnects: 0,
    };
    for (const a of acks) { out.sent += a.sent; out.acked += a.sent - a.failed.length; out.ack_failures += a.failed.length; }
    let first = Infinity;
    let last = 0;
    let cpuUs = 0;
    let sysUs = 0;
    for (const r of results) {
      if (r.type === 'error') { out.ok = false; out.error = r.error; continue; }
      out.deliveries += r.deliveriesTotal;
      out.deliveries_in_window += r.deliveriesInWindow;
      out.duplicates += r.duplicates;
      out.foreign += r.foreign;
      out.missing += r.missing;
      out.receivers_with_loss += r.receiversWithLoss;
      out.max_missing_per_receiver = Math.max(out.max_missing_per_receiver, r.maxMissing);
      out.disconnects += r.disconnects;
      if (r.firstDelivery !== null && r.firstDelivery < first) first = r.firstDelivery;
      if (r.lastDelivery !== null && r.lastDelivery > last) last = r.lastDelivery;
      hist.merge(r.hist);
      ackHist.merge(r.ackHist);
      if (r.cpu) { cpuUs += r.cpu.user + r.cpu.system; sysUs += r.cpu.system; }
    }
    out.expected_deliveries = out.acked * cfg.clients;
    out.deliveries_per_s = Math.round(out.deliveries_in_window / cfg.duration);
    out.acked_per_s = Math.round(acks.reduce((n, a) => n + a.sent - a.failed.length, 0) / (cfg.warmup + cfg.duration));
    out.drain_ms = last && last > stopAt ? Math.round(last - stopAt) : 0;
    out.loadgen_cpu_s = Math.round(cpuUs / 1e4) / 100;
    out.loadgen_us_per_delivery = out.deliveries ? Math.round((cpuUs / out.deliveries) * 100) / 100 : null;
    out.loadgen_kernel_share = cpuUs ? Math.round((sysUs / cpuUs) * 1000) / 1000 : null;
    out.latency = hist.summary();
    out.ack_latency = ackHist.summary();
    emit(out);
    return shutdown(0);
  }

  if (cfg.mode === 'idle') {
    let base = 0;
    workers.forEach((child, w) => {
      const count = Math.floor(cfg.count / nw) + (w < cfg.count % nw ? 1 : 0);
      child.send({ type: 'idleOpen', cfg, count, base });
      base += count;
    });
    const held = await all('held', (cfg.duration + cfg.connectTimeout + 30) * 1000);
    const h = { event: 'held', held: 0, attempts: 0, failed: 0, errors: {}, elapsed_s: 0 };
    for (const r of held) {
      if (r.type === 'error') { h.errors[r.error] = (h.errors[r.error] || 0) + 1; continue; }
      h.held += r.held; h.attempts += r.attempts; h.failed += r.failed;
      h.elapsed_s = Math.max(h.elapsed_s, Math.round(r.elapsed * 100) / 100);
      mergeCounts(h.errors, r.errors);
    }
    emit(h);
    // wait for "release" on stdin (the driver measures memory meanwhile), bounded by cfg.hold
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, cfg.hold * 1000);
      let buf = '';
      process.stdin.setEncoding('utf8');
      process.stdin.on('data', (d) => {
        buf += d;
        if (buf.includes('release')) { clearTimeout(timer); resolve(); }
      });
      process.stdin.on('end', () => { clearTimeout(timer); resolve(); });
    });
    workers.forEach((child) => child.send({ type: 'idleCheck' }));
    const checked = await all('checked', 30000);
    const stillHeld = checked.reduce((n, r) => n + (r.held || 0), 0);
    emit({ ...h, event: 'result', ok: true, mode: 'idle', still_held: stillHeld });
    return shutdown(0);
  }

  log(`unknown mode ${cfg.mode}`);
  return shutdown(2);
}

if (process.argv.includes('--worker')) workerMain();
else coordinatorMain().catch((e) => { log(e && e.stack ? e.stack : String(e)); process.exit(1); });
