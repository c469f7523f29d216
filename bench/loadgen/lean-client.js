'use strict';
// A lean Socket.IO v5 client (Engine.IO v4, websocket transport only, default
// namespace) over the `ws` package: the load generator's measuring instrument.
//
// Why: at saturation socket.io-client's layers (engine.io-client's transport and
// socket, socket.io-parser's decoder, two emitters and a nextTick per packet) cost
// the load generator about as much CPU per delivery as the server under test
// spends, on the same two cores, so deliveries/s measured mostly the load
// generator. This client does what a receiver must (the handshake, pong, one
// JSON.parse per event, acks) and nothing else, for every target alike.
//
// It offers the subset of socket.io-client's API that loadgen.js uses:
//   io(url, {auth, timeout}) -> socket; socket.on/off('connect' | 'connect_error'
//   | 'disconnect' | <event>); socket.timeout(ms).emit(event, data, (err, ack) => ...);
//   socket.timeout(ms).emitWithAck(event, data); socket.close().

const WebSocket = require('ws');

const OPEN = '0';
const CLOSE = '1';
const PING = '2';
const PONG = '3';
const MESSAGE = '4';
// Socket.IO packet types, after the Engine.IO MESSAGE type
const SIO_CONNECT = '0';
const SIO_DISCONNECT = '1';
const SIO_EVENT = '2';
const SIO_ACK = '3';
const SIO_CONNECT_ERROR = '4';

function wsUrl(url) {
  const u = new URL(url);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.pathname = '/socket.io/';
  u.search = '?EIO=4&transport=websocket';
  return u.toString();
}

// Where the JSON array of "2<id>[...]" / "3<id>[...]" starts, and the ack id before it.
function splitId(s, from) {
  let i = from;
  let id = -1;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) break;
    id = (id < 0 ? 0 : id * 10) + (c - 48);
    i++;
  }
  return [id, i];
}

class LeanSocket {
  constructor(url, opts = {}) {
    this.listeners = new Map();
    this.acks = new Map();
    this.nextId = 0;
    this.connected = false;
    this.closed = false;
    this.id = null;
    const timeoutMs = opts.timeout || 20000;
    this.connectTimer = setTimeout(() => this.fail('timeout'), timeoutMs);
    this.pingTimer = null;
    this.pingDeadlineMs = 0; // pingInterval + pingTimeout from the open packet
    // ws's defaults offer permessage-deflate, as browsers and socket.io-client do: a
    // server that accepts it (stock hypercorn, CHAT_ACCEL=off) pays for it here too.
    this.ws = new WebSocket(wsUrl(url));
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) return; // binary attachments ("5"/"6" packets): nothing in this protocol sends them
      try {
        this.onText(data.toString());
      } catch (e) {
        // a packet that does not parse: drop the connection as socket.io-client does
        this.lost(`bad packet: ${e && e.message ? e.message : String(e)}`);
      }
    });
    this.ws.on('error', (e) => this.fail(e && e.message ? e.message : String(e)));
    this.ws.on('close', () => this.onClose());
    this.auth = opts.auth;
    this.closeReason = null;
  }

  on(event, fn) {
    let l = this.listeners.get(event);
    if (!l) this.listeners.set(event, (l = []));
    l.push(fn);
    return this;
  }

  off(event, fn) {
    const l = this.listeners.get(event);
    if (l) {
      const i = l.indexOf(fn);
      if (i >= 0) l.splice(i, 1);
    }
    return this;
  }

  fire(event, arg) {
    const l = this.listeners.get(event);
    if (!l) return;
    if (l.length === 1) l[0](arg);
    else for (const fn of l.slice()) fn(arg);
  }

  fail(reason) {
    if (this.connected || this.closed) return;
    clearTimeout(this.connectTimer);
    this.closed = true;
    this.fire('connect_error', new Error(reason));
    try { this.ws.terminate(); } catch (e) { /* not open yet */ }
  }

  onText(s) {
    const type = s[0];
    if (type === MESSAGE) {
      const sio = s[1];
      if (sio === SIO_EVENT) {
        const [, start] = splitId(s, 2);
        const args = JSON.parse(s.slice(start));
        this.fire(args[0], args[1]);
      } else if (sio === SIO_ACK) {
        const [id, start] = splitId(s, 2);
        const cb = this.acks.get(id);
        if (cb) {
          this.acks.delete(id);
          cb(null, JSON.parse(s.slice(start))[0]);
        }
      } else if (sio === SIO_CONNECT) {
        clearTimeout(this.connectTimer);
        if (this.closed) return;
        const body = s.length > 2 ? JSON.parse(s.slice(2)) : {};
        this.id = body.sid || null;
        this.connected = true;
        this.fire('connect');
      } else if (sio === SIO_CONNECT_ERROR) {
        const body = s.length > 2 ? JSON.parse(s.slice(2)) : null;
        this.fail((body && body.message) || 'connect_error');
      } else if (sio === SIO_DISCONNECT) {
        this.closeReason = 'io server disconnect';
        this.ws.close();
      }
    } else if (type === PING) {
      this.armPing();
      this.ws.send(PONG);
    } else if (type === OPEN) {
      const open = JSON.parse(s.slice(1));
      this.pingDeadlineMs = (open.pingInterval || 0) + (open.pingTimeout || 0);
      this.armPing();
      this.ws.send(MESSAGE + SIO_CONNECT + (this.auth ? JSON.stringify(this.auth) : ''));
    } else if (type === CLOSE) {
      this.ws.close();
    }
  }

  // As socket.io-client: a server silent for pingInterval + pingTimeout is gone.
  armPing() {
    if (!this.pingDeadlineMs) return;
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => this.lost('ping timeout'), this.pingDeadlineMs);
  }

  lost(reason) {
    if (!this.connected) {
      this.fail(reason);
      return;
    }
    this.closeReason = reason;
    try { this.ws.terminate(); } catch (e) { /* already gone */ }
  }

  onClose() {
    clearTimeout(this.connectTimer);
    clearTimeout(this.pingTimer);
    const was = this.connected;
    this.connected = false;
    if (!was && !this.closed) {
      this.closed = true;
      this.fire('connect_error', new Error('websocket closed'));
      return;
    }
    this.closed = true;
    for (const cb of this.acks.values()) cb(new Error('disconnected'));
    this.acks.clear();
    if (was) this.fire('disconnect', this.closeReason || 'transport close');
  }

  send(event, data, cb, timeoutMs) {
    if (this.ws.readyState !== WebSocket.OPEN) {
      if (cb) cb(new Error('not connected'));
      return;
    }
    let id = '';
    if (cb) {
      const n = this.nextId++;
      id = String(n);
      const timer = setTimeout(() => {
        if (this.acks.delete(n)) cb(new Error('operation has timed out'));
      }, timeoutMs);
      this.acks.set(n, (err, ack) => { clearTimeout(timer); cb(err, ack); });
    }
    this.ws.send(MESSAGE + SIO_EVENT + id + JSON.stringify([event, data]));
  }

  timeout(ms) {
    return {
      emit: (event, data, cb) => this.send(event, data, cb, ms),
      emitWithAck: (event, data) => new Promise((resolve, reject) => {
        this.send(event, data, (err, ack) => (err ? reject(err) : resolve(ack)), ms);
      }),
    };
  }

  close() {
    clearTimeout(this.connectTimer);
    clearTimeout(this.pingTimer);
    const was = this.connected;
    this.closed = true;
    this.connected = false;
    try { this.ws.close(); } catch (e) { /* never opened */ }
    if (was) this.fire('disconnect', 'io client disconnect');
  }
}

function io(url, opts) {
  return new LeanSocket(url, opts);
}

module.exports = { io, LeanSocket };
