'use strict';
// Benchmark peer: Node socket.io 4 with @socket.io/redis-adapter, the canonical
// Socket.IO fleet. Implements the subset of fleetchat's PROTOCOL.md that the
// load generator uses: connect with auth {name}, `join` with ack, `message`
// broadcast to the room (sender included) with ack {ok, id, seq, ts}.
// seq/id come from a per-instance, per-room counter (no shared store).
//
//   PORT=8001 REDIS_URL=redis://127.0.0.1:6390/0 node server.js
//
// With REDIS_CLUSTER=1, REDIS_URL names one node of a Redis Cluster: node-redis's
// createCluster finds the others from it, and the adapter is the sharded one
// (createShardedAdapter: SPUBLISH/SSUBSCRIBE, a channel per room by default).
//
//   PORT=8001 REDIS_URL=redis://127.0.0.1:7000 REDIS_CLUSTER=1 node server.js

const http = require('http');
const { Server } = require('socket.io');
const { createAdapter, createShardedAdapter } = require('@socket.io/redis-adapter');
const { createClient, createCluster } = require('redis');

const PORT = parseInt(process.env.PORT || '8000', 10);
const HOST = process.env.HOST || '127.0.0.1';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0';
const CLUSTER = !['', '0'].includes(process.env.REDIS_CLUSTER || '');
const MAX_TEXT = 4000;

function fail(ack, error, detail) {
  if (typeof ack === 'function') ack({ ok: false, error, detail });
}

async function main() {
  const pubClient = CLUSTER ? createCluster({ rootNodes: [{ url: REDIS_URL }] }) : createClient({ url: REDIS_URL });
  const subClient = pubClient.duplicate();
  pubClient.on('error', (e) => console.error('redis pub error', e.message));
  subClient.on('error', (e) => console.error('redis sub error', e.message));
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const io = new Server(httpServer, {
    adapter: CLUSTER ? createShardedAdapter(pubClient, subClient) : createAdapter(pubClient, subClient),
    cors: { origin: '*' },
  });
  const seqs = new Map();
  let counter = 0;
  const instance = `${PORT}`;

  io.use((socket, next) => {
    const auth = socket.handshake.auth || {};
    const name = typeof auth.name === 'string' ? auth.name.trim() : '';
    if (!name || name.length > 32) return next(new Error('invalid name'));
    socket.data.user = { id: `${instance}-${socket.id}`, name };
    return next();
  });

  io.on('connection', (socket) => {
    socket.on('join', (data, ack) => {
      const room = data && typeof data.room === 'string' ? data.room : '';
      if (!room) return fail(ack, 'bad_request', 'room required');
      socket.join(room);
      if (typeof ack === 'function') ack({ ok: true, room, epoch: instance, history: [], members: [] });
      return undefined;
    });
    socket.on('leave', (data, ack) => {
      const room = data && typeof data.room === 'string' ? data.room : '';
      socket.leave(room);
      if (typeof ack === 'function') ack({ ok: true });
    });
    socket.on('message', (data, ack) => {
      const room = data && typeof data.room === 'string' ? data.room : '';
      const text = data && typeof data.text === 'string' ? data.text : '';
      if (!room || !text) return fail(ack, 'bad_request', 'room and text required');
      if (text.length > MAX_TEXT) return fail(ack, 'too_large', 'text too long');
      if (!socket.rooms.has(room)) return fail(ack, 'not_in_room', 'join the room first');
      const seq = (seqs.get(room) || 0) + 1;
      seqs.set(room, seq);
      counter += 1;
      const id = `${Date.now().toString(36)}-${instance}-${counter}`;
      const ts = Date.now();
      const msg = { id, seq, room, user: socket.data.user, text, ts, client_id: data.client_id || null };
      io.to(room).emit('message', msg);
      if (typeof ack === 'function') ack({ ok: true, id, seq, ts });
      return undefined;
    });
  });

  httpServer.listen(PORT, HOST, () => console.error(`node-socketio peer on ${HOST}:${PORT}${CLUSTER ? ' (Redis Cluster, sharded adapter)' : ''}`));
  const stop = () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
