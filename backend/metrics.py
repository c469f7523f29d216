"""Prometheus metrics, one registry per app so tests can build several apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backend.accel import CUTS, lean_websocket


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected = Gauge(
            "fleetchat_connected_sockets", "Socket.IO and /ws connections on this instance", registry=r
        )
        self.lean_websockets = Gauge(
            "fleetchat_lean_websockets",
            "Socket.IO websockets served by the lean protocol after hypercorn's handshake (this process)",
            registry=r,
        )
        self.lean_websockets.set_function(lean_websocket.live_count)
        self.accel_applied = Gauge(
            "fleetchat_accel_applied",
            "1 when the fast path's cut (backend/accel/) is applied, 0 when off or refused by its version gate",
            ["cut"],
            registry=r,
        )
        for cut in CUTS:
            self.accel_applied.labels(cut.name).set_function(lambda cut=cut: float(cut.applied))
        self.rooms = Gauge("fleetchat_local_rooms", "Rooms with a listener on this instance", registry=r)
        self.messages_in = Counter("fleetchat_messages_in_total", "Messages stored through this instance", registry=r)
        self.messages_out = Counter("fleetchat_deliveries_total", "Message deliveries to local sockets", registry=r)
        self.changes = Counter(
            "fleetchat_changes_total", "Edits, deletes and reactions stored through this instance", ["kind"], registry=r
        )
        self.fanout_flushes = Counter(
            "fleetchat_fanout_flushes_total",
            "Batches of deliveries written to local sockets (deliveries per flush is the batching)",
            registry=r,
        )
        self.duplicates = Counter("fleetchat_duplicate_sends_total", "Resends answered from dedupe", registry=r)
        self.refused = Counter("fleetchat_refused_total", "Requests refused, by error code", ["code"], registry=r)
        self.connections_refused = Counter(
            "fleetchat_connections_refused_total", "Connections refused, by reason", ["reason"], registry=r
        )
        self.store_errors = Counter("fleetchat_store_errors_total", "Store or Redis operations that failed", registry=r)
        self.replayed = Counter(
            "fleetchat_relay_replayed_total", "Messages read back from the store to fill a gap", registry=r
        )
        self.held = Counter(
            "fleetchat_relay_held_total", "Messages that arrived before an earlier one and waited for it", registry=r
        )
        fine = (0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.1)
        self.append_latency = Histogram(
            "fleetchat_append_seconds",
            "The store's append of a message, as the sending instance waits for it",
            buckets=fine,
            registry=r,
        )
        self.pubsub_lag = Histogram(
            "fleetchat_pubsub_lag_seconds",
            "From a message's timestamp (set by the sending instance) to its arrival here over pub/sub",
            buckets=fine,
            registry=r,
        )
        self.redis_errors = Counter(
            "fleetchat_redis_errors_total",
            "Redis calls outside a request that failed (heartbeat, reaper, relay sweep, readiness ping)",
            ["source"],
            registry=r,
        )
        self.pubsub_reconnects = Counter(
            "fleetchat_pubsub_reconnects_total",
            "Times the pub/sub listener subscribed again after losing Redis",
            registry=r,
        )
        self.pubsub_received = Counter(
            "fleetchat_pubsub_received_total",
            "Pub/sub messages this instance received (its rooms' channels and the shared one)",
            registry=r,
        )
        self.room_channels = Gauge(
            "fleetchat_room_channels",
            "Room channels this instance subscribes to (its rooms with a listener)",
            registry=r,
        )
        self.fanout_latency = Histogram(
            "fleetchat_fanout_latency_seconds",
            "From the message's timestamp to its local fan-out",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
