/* Tether browser UI, part 2 of 5: the live connection.
 *
 * Layers, bottom up:
 *
 *   SseFeed, WsFeed, PollFeed  one transport each. A feed delivers the events of the sessions
 *                              it serves and inbox snapshots to its Conn, and reports when it
 *                              is caught up or has failed.
 *   Conn                       the transport chain: SSE by default, WebSocket when asked,
 *                              long-poll when the others fail (or EventSource is missing);
 *                              reconnects with backoff (1 s doubling to 30 s, +-25 % jitter)
 *                              from its cursors; drops half-open connections (no data for 2.5
 *                              keepalives); reconnects at once when the page comes back. A
 *                              stream that has not caught up within TRUST_MS of opening (a
 *                              proxy that buffers streams holds it silent, with no error) is
 *                              not trusted: it moves down the chain at once, remembers that
 *                              for the origin for a day when the next transport works, and
 *                              probes the stream quietly in the background to come back.
 *   Link                       who holds the Conn. One tab per origin, the leader (elected
 *                              with Web Locks), holds it and relays what it hears to the other
 *                              tabs over a BroadcastChannel. Without Web Locks or
 *                              BroadcastChannel every tab holds its own ("solo").
 *   Feeder                     per tab: applies a session's events to the transcript exactly
 *                              once and in order, fetching any gap itself (short requests).
 *
 * Why the connection budget holds. Browsers allow six HTTP/1.1 connections per origin, shared
 * by every tab; if ten tabs each held a stream, an approval POST would queue behind them. So
 * the whole origin holds ONE long-lived connection, in the leader tab:
 *   - WebSocket: one socket, every session some tab shows attached to it (each with its own
 *     cursor) plus `inbox.subscribe`.
 *   - SSE: one EventSource: the stream of the "primary" session (the one in the most recently
 *     focused visible tab) with `?inbox=1`, or `/api/inbox/stream` when no tab shows one. An
 *     EventSource carries one session, so tabs showing another session are not served live:
 *     while visible they fetch their session with short `wait=0` polls every few seconds
 *     (requests that finish at once, so they never hold a connection), and the moment a tab
 *     is focused its session becomes the primary.
 *   - long-poll: one outstanding long-poll, of the primary session with `&inbox=R`, or of
 *     `/api/inbox` when no tab shows a session; other sessions as for SSE.
 * That is one long-lived connection per origin (the budget asked for is two), and POSTs
 * (answers, prompts) always go out directly from the tab where they were clicked.
 *
 * No event is shown twice or lost across any switch: the Feeder drops every id at or below the
 * transcript's last id, and fetches the missing range when an id skips ahead. Every transport
 * resumes from the Conn's cursor (SSE `?after=`, WS `session.attach {after}`, poll `after=`),
 * and a `reset` (cursor past the end, or a new server epoch) clears and replays.
 */
"use strict";

// The server's keepalive interval (TETHER_KEEPALIVE), rendered into the page; a WebSocket's
// gateway.ready repeats it.
const KEEPALIVE_S = Number(document.body.dataset.keepaliveSeconds) || 15;

// ------------------------------------------------------------------ feeds

class SseFeed {
  constructor(conn) {
    this.conn = conn;
    this.es = null;
    this.sid = null;
  }

  open() {
    const conn = this.conn;
    const sid = conn.primary;
    this.sid = sid;
    let url;
    if (sid) {
      const params = {after: String(conn.cursorOf(sid)), inbox: "1"};
      if (conn.epoch) params.epoch = conn.epoch;
      url = `${Api.path(sid, "/stream")}?${new URLSearchParams(params)}`;
    } else {
      url = "/api/inbox/stream";
    }
    const es = new EventSource(url);
    this.es = es;
    const live = (fn) => (e) => {
      if (this.es !== es) return;
      conn.touch();
      try {
        fn(e);
      } catch (err) {
        console.error("tether: bad SSE message", err);
      }
    };
    es.onmessage = live((e) => conn.deliver(sid, JSON.parse(e.data)));
    es.addEventListener("caught-up", live((e) => conn.caughtUp(sid, JSON.parse(e.data))));
    es.addEventListener("reset", live((e) => conn.reset(sid, JSON.parse(e.data))));
    es.addEventListener("ping", live(() => {}));
    es.addEventListener("inbox", live((e) => {
      conn.inbox(JSON.parse(e.data));
      if (!sid) conn.ready(); // the inbox stream has no caught-up: its first snapshot is it
    }));
    // The server is stopping (docs/protocol.md): not a failure of SSE. Close before the
    // browser's own quick retry and come back with the usual backoff, from our cursor.
    es.addEventListener("shutdown", live(() => conn.failed(this, "stopping")));
    // Any error: close and recreate ourselves, with backoff, from our own cursor. This also
    // covers readyState CLOSED (a non-200 answer), after which a browser never retries.
    es.onerror = live(() => conn.failed(this));
  }

  /** SSE serves the primary session only: a new primary means a new stream. */
  update() {
    if (this.conn.primary !== this.sid) this.conn.restart();
  }

  close() {
    if (this.es) this.es.close();
    this.es = null;
  }
}

class PollFeed {
  WAIT = 25;

  constructor(conn) {
    this.conn = conn;
    this.alive = false;
    this.ctrl = null;
    this.sid = null;
    this.inboxRev = null;
  }

  open() {
    this.alive = true;
    this.loop();
  }

  update() {
    // A new primary: end the outstanding long-poll; the loop asks for the new one.
    if (this.conn.primary !== this.sid && this.ctrl) this.ctrl.abort();
  }

  close() {
    this.alive = false;
    if (this.ctrl) this.ctrl.abort();
  }

  async get(url, wait) {
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    const timeout = setTimeout(() => ctrl.abort(), (wait + 15) * 1000);
    try {
      const res = await fetch(url, {signal: ctrl.signal, cache: "no-store", headers: {Accept: "application/json"}});
      if (res.status === 401) SignedOut.handle();
      const body = res.ok ? await res.json() : null;
      return {status: res.status, body};
    } finally {
      clearTimeout(timeout);
      if (this.ctrl === ctrl) this.ctrl = null;
    }
  }

  async loop() {
    const conn = this.conn;
    let wait = 0; // the first request answers at once: caught up, then long-poll
    let lastSid;
    while (this.alive) {
      const sid = conn.primary;
      this.sid = sid;
      if (sid !== lastSid) wait = 0;
      lastSid = sid;
      let answer;
      try {
        if (sid) {
          const params = {after: String(conn.cursorOf(sid)), wait: String(wait), limit: "500",
            inbox: String(this.inboxRev === null ? 0 : this.inboxRev)};
          answer = await this.get(`${Api.path(sid, "/events")}?${new URLSearchParams(params)}`, wait);
        } else {
          const params = this.inboxRev === null ? {} : {after: String(this.inboxRev), wait: String(wait)};
          answer = await this.get(`/api/inbox?${new URLSearchParams(params)}`, wait);
        }
      } catch (err) {
        if (!this.alive) return;
        if (conn.primary !== sid) continue; // aborted for a new primary
        return conn.failed(this);
      }
      if (!this.alive) return;
      if (sid && answer.status === 404) {
        conn.gone(sid);
        continue;
      }
      if (!answer.body) return conn.failed(this);
      conn.touch();
      const page = answer.body;
      if (sid) {
        if (page.inbox) this.takeInbox(page.inbox);
        const cursor = conn.cursorOf(sid);
        if (page.last_event_id < cursor) {
          // Our cursor is past the end of the log: the server restarted without its store.
          conn.reset(sid, {last_event_id: page.last_event_id, epoch: null});
          wait = 0;
          continue;
        }
        for (const event of page.events) conn.deliver(sid, event);
        if (page.events.length < 500) {
          conn.caughtUp(sid, {last_event_id: page.last_event_id});
          wait = this.WAIT;
        } else {
          wait = 0;
        }
      } else {
        this.takeInbox(page);
        conn.ready();
        wait = this.WAIT;
      }
    }
  }

  takeInbox(snapshot) {
    this.inboxRev = snapshot.revision;
    this.conn.inbox(snapshot);
  }
}

class WsFeed {
  constructor(conn) {
    this.conn = conn;
    this.ws = null;
    this.nextId = 1;
    this.calls = new Map();
    this.attached = new Set();
    this.ready = false;
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/ws`);
    this.ws = ws;
    this.ready = false;
    this.attached.clear();
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      this.conn.touch();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (err) {
        return console.error("tether: unparsable WebSocket frame", err);
      }
      for (const m of Array.isArray(msg) ? msg : [msg]) this.receive(m);
    };
    const fail = () => {
      if (this.ws !== ws) return;
      this.close();
      this.conn.failed(this);
    };
    ws.onclose = fail;
    ws.onerror = fail;
  }

  close() {
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    this.attached.clear();
    for (const {reject} of this.calls.values()) reject(new Error("socket closed"));
    this.calls.clear();
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch (err) { /* already closed */ }
    }
  }

  call(method, params = {}) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return reject(new Error("socket not open"));
      const id = this.nextId++;
      this.calls.set(id, {resolve, reject});
      this.ws.send(JSON.stringify({jsonrpc: "2.0", id, method, params}));
    });
  }

  receive(msg) {
    const conn = this.conn;
    if (msg.id !== undefined && msg.id !== null && !msg.method) {
      const call = this.calls.get(msg.id);
      if (!call) return;
      this.calls.delete(msg.id);
      if (msg.error) {
        const err = new Error(msg.error.message);
        err.code = msg.error.code;
        err.tether = msg.error.data && msg.error.data.code;
        call.reject(err);
      } else {
        call.resolve(msg.result);
      }
      return;
    }
    const p = msg.params || {};
    switch (msg.method) {
      case "gateway.ready":
        if (typeof p.keepalive_seconds === "number") conn.keepalive = p.keepalive_seconds;
        if (conn.epoch && p.epoch && p.epoch !== conn.epoch) conn.epochChanged(p.epoch);
        this.ready = true;
        this.call("inbox.subscribe").then((snapshot) => {
          conn.inbox(snapshot);
          conn.ready();
        }, (err) => console.warn("tether: inbox.subscribe", err));
        this.update();
        break;
      case "event":
        conn.deliver(p.session_id, p.event);
        break;
      case "caught_up":
        conn.caughtUp(p.session_id, p);
        break;
      case "reset":
        conn.reset(p.session_id, p);
        break;
      case "detached":
        this.attached.delete(p.session_id);
        if (p.reason === "ended") conn.gone(p.session_id);
        break;
      case "inbox":
        conn.inbox(p);
        break;
      default: // ping, and anything newer than this page
        break;
    }
  }

  /** Attach every session the tabs want, detach the rest: all on this one socket. */
  update() {
    if (!this.ready) return;
    const want = new Set(this.conn.targets);
    for (const sid of want) {
      if (this.attached.has(sid)) continue;
      this.attached.add(sid);
      const params = {session_id: sid, after: this.conn.cursorOf(sid)};
      if (this.conn.epoch) params.epoch = this.conn.epoch;
      this.call("session.attach", params).catch((err) => {
        this.attached.delete(sid);
        if (err.code === -32001) this.conn.gone(sid);
        else if (this.ws) console.warn("tether: session.attach", err);
      });
    }
    for (const sid of [...this.attached]) {
      if (want.has(sid)) continue;
      this.attached.delete(sid);
      this.call("session.detach", {session_id: sid}).catch(() => {});
    }
  }
}

// ------------------------------------------------------------------ Conn

/** Whether the transport `mode` ("sse" or "ws") delivers here within `withinMs`: the inbox
 *  stream's first snapshot, or the socket's gateway.ready. Opens its own connection and
 *  always closes it; resolves a boolean, never rejects. */
function probeStream(mode, withinMs) {
  return new Promise((resolve) => {
    let source = null;
    let settled = false;
    const settle = (works) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        if (source) source.close();
      } catch (err) { /* already closed */ }
      resolve(works);
    };
    const timer = setTimeout(() => settle(false), withinMs);
    try {
      if (mode === "ws") {
        const scheme = location.protocol === "https:" ? "wss:" : "ws:";
        source = new WebSocket(`${scheme}//${location.host}/api/ws`);
        source.onmessage = () => settle(true);
        source.onerror = source.onclose = () => settle(false);
      } else {
        source = new EventSource("/api/inbox/stream");
        source.addEventListener("inbox", () => settle(true));
        source.onerror = () => settle(false);
      }
    } catch (err) {
      settle(false);
    }
  });
}

/** The leader's (or a solo tab's) connection: one feed at a time, along the chain. */
class Conn {
  static FEEDS = {sse: SseFeed, ws: WsFeed, poll: PollFeed};
  static NEXT = {ws: "sse", sse: "poll", poll: "poll"};
  static FAILURES_BEFORE_NEXT = 3;
  // A stream answers caught-up within milliseconds on a good connection; one silent this long
  // after opening is held by something on the way.
  static TRUST_MS = 5000;
  // How often a page that fell back tries the transport it fell back from, quietly.
  static PROBE_MS = 120_000;

  constructor(sink) {
    this.sink = sink; // {event, reset, caughtUp, inbox, status, gone}
    this.mode = Prefs.preferredTransport();
    this.feed = null;
    this.targets = []; // sessions to serve (SSE and poll serve only the primary)
    this.primary = null;
    this.cursors = new Map();
    this.epoch = null;
    this.keepalive = KEEPALIVE_S;
    this.attempt = 0; // failures since the last success
    this.failuresHere = 0; // failures of this transport without ever succeeding
    this.succeeded = false;
    this.connected = false;
    this.lastSeen = Date.now();
    this.timer = null;
    this.stopped = false;
    this.trustTimer = null;
    // Transports distrusted on the way to this one, and when the last switch was: remembered
    // as fallbacks when this one works at once (then plain HTTP worked while they were silent).
    this.distrusted = [];
    this.switchedAt = 0;
    this.probeTimer = null;
    this.probing = false;
    this.watch = setInterval(() => this.watchdog(), 2000);
    this.probeLater();
  }

  cursorOf(sid) {
    return this.cursors.get(sid) || 0;
  }

  /** Serve these sessions ({sid: cursor}); `primary` is the one SSE and poll carry. */
  setTargets(wanted, primary) {
    // Resume each session from the furthest cursor any tab (or this connection) has: a tab
    // that is behind fetches its own gap.
    for (const [sid, cursor] of Object.entries(wanted)) this.cursors.set(sid, Math.max(cursor, this.cursorOf(sid)));
    const targets = Object.keys(wanted);
    const changed = primary !== this.primary || targets.join() !== this.targets.join();
    if (primary !== this.primary && this.mode !== "ws") {
      // A new stream: whether this transport works is an open question again (a proxy may
      // pass the inbox stream and break session streams).
      this.succeeded = false;
      this.failuresHere = 0;
    }
    this.targets = targets;
    this.primary = primary;
    for (const sid of [...this.cursors.keys()]) if (!targets.includes(sid)) this.cursors.delete(sid);
    if (!this.feed && !this.timer) return this.connect();
    if (!changed) return;
    if (this.feed) this.feed.update();
    this.report();
  }

  /** The sessions delivered live right now. */
  get served() {
    if (!this.connected) return [];
    return this.mode === "ws" ? [...this.targets] : this.primary ? [this.primary] : [];
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.feed) this.feed.close();
    this.connected = false;
    this.lastSeen = Date.now();
    const feed = new Conn.FEEDS[this.mode](this);
    this.feed = feed;
    this.report();
    feed.open();
    clearTimeout(this.trustTimer);
    if (this.mode !== "poll") this.trustTimer = setTimeout(() => this.distrust(feed), Conn.TRUST_MS);
  }

  restart() {
    if (this.feed) this.feed.close();
    this.feed = null;
    this.connect();
  }

  touch() {
    this.lastSeen = Date.now();
  }

  deliver(sid, event) {
    if (!sid || !event || typeof event.id !== "number") return;
    if (event.id > this.cursorOf(sid) && this.targets.includes(sid)) this.cursors.set(sid, event.id);
    this.sink.event(sid, event);
  }

  caughtUp(sid, info) {
    if (info.epoch) {
      if (this.epoch && info.epoch !== this.epoch) this.epochChanged(info.epoch);
      this.epoch = info.epoch;
    }
    this.ready();
    this.sink.caughtUp(sid, info);
  }

  /** The feed works: forget past failures, say so. */
  ready() {
    clearTimeout(this.trustTimer);
    this.trustTimer = null;
    if (this.distrusted.length) {
      if (Date.now() - this.switchedAt < Conn.TRUST_MS) {
        for (const from of this.distrusted) Prefs.rememberFallback(from, this.mode);
      }
      this.distrusted = [];
      this.probeLater();
    }
    this.attempt = 0;
    this.failuresHere = 0;
    this.succeeded = true;
    if (!this.connected) {
      this.connected = true;
      this.report();
    }
  }

  reset(sid, info) {
    if (info && info.epoch) this.epoch = info.epoch;
    if (sid) this.cursors.set(sid, 0);
    this.sink.reset(sid, info || {});
  }

  /** Ids restarted on the server (it lost its log): every cursor starts again from 0. */
  epochChanged(epoch) {
    this.epoch = epoch;
    for (const sid of this.cursors.keys()) {
      this.cursors.set(sid, 0);
      this.sink.reset(sid, {epoch});
    }
  }

  inbox(snapshot) {
    if (snapshot && snapshot.epoch) {
      if (this.epoch && snapshot.epoch !== this.epoch) this.epochChanged(snapshot.epoch);
      this.epoch = snapshot.epoch;
    }
    this.sink.inbox(snapshot);
  }

  gone(sid) {
    this.cursors.delete(sid);
    this.sink.gone(sid);
  }

  /** The feed broke. Back off, then try again, moving down the chain when this transport has
   *  never worked here. An SSE stream that fails may mean its session is gone: ask.
   *  `why` "stopping": the server said it is stopping; back off, but the transport is fine. */
  failed(feed, why) {
    if (feed !== this.feed || this.stopped) return;
    feed.close();
    this.feed = null;
    this.connected = false;
    const online = navigator.onLine !== false;
    if (online) {
      this.attempt += 1;
      if (!this.succeeded && why !== "stopping") this.failuresHere += 1;
    }
    if (this.failuresHere >= Conn.FAILURES_BEFORE_NEXT && Conn.NEXT[this.mode] !== this.mode) {
      let next = Conn.NEXT[this.mode];
      if (next === "sse" && typeof window.EventSource !== "function") next = "poll";
      console.warn(`tether: ${this.mode} keeps failing; switching to ${next}`);
      this.mode = next;
      this.failuresHere = 0;
      this.attempt = 0;
      this.succeeded = false;
      return this.connect();
    }
    this.report(online && this.attempt <= 4 ? "reconnecting" : "offline");
    const delay = backoff(this.attempt);
    this.timer = setTimeout(() => this.retry(), delay);
  }

  async retry() {
    this.timer = null;
    const sid = this.primary;
    // Probe over plain HTTP: a deleted session (404), or a server that no longer knows this
    // browser (401, handled by Api), cannot be told apart from a network error otherwise.
    try {
      await (sid ? Api.session(sid) : Api.sessions());
    } catch (err) {
      if (sid && this.mode !== "ws" && err instanceof ApiError && err.status === 404) this.gone(sid);
    }
    if (!this.timer && !this.feed) this.connect();
  }

  /** The page is back (visible, focused, online, restored): reconnect now, not after the
   *  backoff; and a connection that has been silent too long is not trusted. */
  nudge(reason) {
    if (this.stopped) return;
    if (reason === "online") {
      // The network is back: start again from the transport asked for.
      const preferred = Prefs.preferredTransport();
      if (this.mode !== preferred && !this.connected) {
        this.mode = preferred;
        this.distrusted = [];
        this.failuresHere = 0;
        this.succeeded = false;
      }
      this.attempt = 0;
    }
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
      this.connect();
    } else if (this.feed && this.connected && this.mode !== "poll"
               && Date.now() - this.lastSeen > (this.keepalive + 5) * 1000) {
      this.restart();
    }
  }

  /** The browser says the network is gone: drop the connection now instead of trusting a
   *  socket that may be half-open; `online` (or the backoff) brings it back. */
  offline() {
    if (this.feed) this.failed(this.feed);
  }

  /** A stream (SSE or WebSocket) opened TRUST_MS ago has not caught up, and has not failed
   *  either: a proxy on the way buffers it (README, Behind a proxy) or never upgrades it. Move down
   *  the chain now, without counting it as a failure or saying "offline". */
  distrust(feed) {
    if (feed !== this.feed || this.connected || this.stopped) return;
    if (navigator.onLine === false) return this.failed(feed);
    let next = Conn.NEXT[this.mode];
    if (next === "sse" && typeof window.EventSource !== "function") next = "poll";
    console.warn(`tether: ${this.mode} delivered nothing in ${Conn.TRUST_MS / 1000} s; switching to ${next}`);
    this.distrusted.push(this.mode);
    this.switchedAt = Date.now();
    this.mode = next;
    this.failuresHere = 0;
    this.attempt = 0;
    this.succeeded = false;
    this.connect();
  }

  /** While on a fallback, try the chosen transport again every PROBE_MS, quietly: when it
   *  delivers, forget the fallbacks and move back to it. */
  probeLater() {
    if (this.probeTimer || this.stopped || this.mode === Prefs.chosenTransport()) return;
    this.probeTimer = setTimeout(() => this.probe(), Conn.PROBE_MS);
  }

  async probe() {
    this.probeTimer = null;
    const chosen = Prefs.chosenTransport();
    if (this.stopped || this.mode === chosen) return;
    if (!document.hidden && navigator.onLine !== false && !this.probing) {
      this.probing = true;
      let works = false;
      try {
        works = await probeStream(chosen, Conn.TRUST_MS);
      } finally {
        this.probing = false;
      }
      if (works && !this.stopped && this.mode !== chosen) {
        console.info(`tether: ${chosen} delivers again; switching back from ${this.mode}`);
        Prefs.forgetFallbacks();
        this.distrusted = [];
        this.mode = chosen;
        this.failuresHere = 0;
        this.attempt = 0;
        this.succeeded = false;
        return this.restart();
      }
    }
    this.probeLater();
  }

  /** No data (events, pings) for 2.5 keepalives: a half-open connection. A long-poll has its
   *  own timeout instead; a stream not yet caught up has TRUST_MS (distrust). */
  watchdog() {
    if (!this.feed || !this.connected || this.mode === "poll") return;
    if (Date.now() - this.lastSeen > this.keepalive * 2500) {
      console.warn("tether: no data for 2.5 keepalives; reconnecting");
      this.failed(this.feed);
    }
  }

  report(state) {
    const s = state || (this.connected ? "connected" : this.attempt ? "reconnecting" : "connecting");
    this.sink.status(s, this.mode, this.served);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.trustTimer);
    clearTimeout(this.probeTimer);
    clearInterval(this.watch);
    if (this.feed) this.feed.close();
    this.feed = null;
  }
}

// ------------------------------------------------------------------ Feeder

/** Applies one session's events to this tab exactly once and in order. Ids at or below the
 *  last applied are dropped; an id that skips ahead makes it fetch the gap from the server
 *  (short, non-blocking requests) before going on. */
const Feeder = {
  sid: null,
  handlers: null, // {cursor(), apply(event), reset(), gone()}
  filling: false,
  pending: [],
  gen: 0,
  served: false,
  pollTimer: null,
  POLL_MS: 3000,

  show(sid, handlers) {
    this.gen += 1;
    this.sid = sid;
    this.handlers = handlers;
    this.pending = [];
    this.filling = false;
    this.served = false;
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  },

  ingest(sid, events) {
    if (!sid || sid !== this.sid) return;
    if (this.filling) {
      this.pending.push(...events);
      return;
    }
    for (const event of events) {
      const last = this.handlers.cursor();
      if (event.id <= last) continue;
      if (event.id === last + 1) {
        this.handlers.apply(event);
        continue;
      }
      this.pending.push(event);
      this.fill();
      return;
    }
  },

  /** Fetch everything after our cursor, apply it, then whatever arrived meanwhile. */
  async fill() {
    if (this.filling || !this.sid) return;
    const gen = this.gen;
    this.filling = true;
    let ok = true;
    try {
      for (let round = 0; round < 50; round++) {
        const page = await Api.events(this.sid, this.handlers.cursor());
        if (gen !== this.gen) return;
        if (page.last_event_id < this.handlers.cursor()) {
          this.handlers.reset(); // our cursor is past the end: the log restarted
          continue;
        }
        for (const event of page.events) {
          if (event.id === this.handlers.cursor() + 1) this.handlers.apply(event);
        }
        if (this.handlers.cursor() >= page.last_event_id || !page.events.length) break;
      }
    } catch (err) {
      ok = false;
      if (gen === this.gen && err instanceof ApiError && err.status === 404) {
        this.handlers.gone();
        return;
      }
    } finally {
      if (gen === this.gen) this.filling = false;
    }
    if (gen !== this.gen) return;
    const pending = this.pending.sort((a, b) => a.id - b.id);
    this.pending = [];
    if (ok) {
      if (pending.length) this.ingest(this.sid, pending);
    } else {
      // The fetch failed (offline?): keep what came in, try again shortly.
      this.pending = pending;
      setTimeout(() => { if (gen === this.gen) this.fill(); }, 2000);
    }
  },

  /** Whether the leader delivers our session live; if not, poll it while visible. */
  setServed(served) {
    this.served = served;
    this.schedulePoll();
  },

  schedulePoll() {
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
    if (!this.sid || this.served || document.hidden) return;
    const gen = this.gen;
    this.pollTimer = setTimeout(async () => {
      if (gen !== this.gen || this.served) return;
      await this.fill();
      if (gen === this.gen) this.schedulePoll();
    }, this.POLL_MS);
  },
};

// ------------------------------------------------------------------ Link

/** Leader election and relay. Messages on the "tether" BroadcastChannel:
 *   from any tab: {t: "want", tab, sid, cursor, visible, ts}, {t: "bye", tab}
 *   from the leader: {t: "ev", sid, events}, {t: "reset", sid}, {t: "gone", sid},
 *                    {t: "inbox", snapshot}, {t: "status", state, mode, served},
 *                    {t: "who"} (a new leader asks every tab what it shows) */
const Link = {
  role: "solo",
  bc: null,
  conn: null,
  tabs: new Map(), // leader: tab id -> {sid, cursor, visible, ts, seen}
  goneSids: new Set(), // deleted sessions: never served again
  me: {sid: null, ts: 0},
  tab: null, // {event(sid, events), reset(sid), inbox(snapshot), gone(sid), status(...)}
  leaderSeen: 0,
  lastStatus: null,
  lastInbox: null,
  heartbeat: null,
  LEADER_STALE_MS: 12000,

  init(tab) {
    this.tab = tab;
    const canShare = typeof BroadcastChannel === "function" && navigator.locks
      && typeof navigator.locks.request === "function";
    if (!canShare) return this.lead();
    this.role = "follower";
    this.bc = new BroadcastChannel("tether");
    this.bc.onmessage = (e) => this.receive(e.data);
    navigator.locks.request("tether-leader", () => new Promise(() => this.lead())).catch((err) => {
      console.warn("tether: Web Locks failed; this tab connects on its own", err);
      if (this.role !== "leader") this.lead();
    });
    this.announce();
    this.heartbeat = setInterval(() => this.tick(), 4000);
    Status.set("connecting", Prefs.preferredTransport());
  },

  /** This tab holds the connection, from now until it closes. */
  lead() {
    this.role = this.bc ? "leader" : "solo";
    const relay = (msg) => { if (this.bc) this.bc.postMessage(msg); };
    this.conn = new Conn({
      event: (sid, event) => {
        this.tab.event(sid, [event]);
        relay({t: "ev", sid, events: [event]});
      },
      reset: (sid) => {
        this.tab.reset(sid);
        relay({t: "reset", sid});
      },
      caughtUp: () => {},
      inbox: (snapshot) => {
        this.lastInbox = snapshot;
        this.tab.inbox(snapshot);
        relay({t: "inbox", snapshot});
      },
      gone: (sid) => {
        this.tab.gone(sid);
        relay({t: "gone", sid});
        this.goneSids.add(sid);
        this.retarget();
      },
      status: (state, mode, served) => {
        this.lastStatus = {t: "status", state, mode, served};
        this.tab.status(state, mode, served);
        Feeder.setServed(this.isServed());
        relay(this.lastStatus);
      },
    });
    if (this.bc) relay({t: "who"});
    this.retarget();
  },

  /** This tab now shows `sid` (or nothing). Unless our own connection is about to replay it
   *  from our cursor, fetch what we miss right away (a short request). */
  want(sid) {
    if (sid !== this.me.sid) this.me.ts = Date.now();
    this.me.sid = sid;
    if (sid) this.goneSids.delete(sid);
    this.announce();
    if (this.conn) this.retarget();
    Feeder.setServed(this.isServed());
    if (!sid) return;
    const c = this.conn;
    const replays = c && (c.mode === "ws" ? c.targets.includes(sid) : c.primary === sid)
      && c.cursorOf(sid) <= this.tab.cursor();
    if (!replays) Feeder.fill();
  },

  announce() {
    if (!this.bc || this.role === "leader") return;
    this.bc.postMessage({t: "want", tab: Client.id, sid: this.me.sid, cursor: this.tab.cursor(),
      visible: !document.hidden, ts: this.me.ts});
  },

  isServed() {
    if (!this.me.sid) return true;
    if (this.conn) return this.conn.served.includes(this.me.sid);
    const s = this.lastStatus;
    return Boolean(s && Date.now() - this.leaderSeen < this.LEADER_STALE_MS && s.served.includes(this.me.sid));
  },

  /** Leader: choose the sessions to serve from what every tab shows. */
  retarget() {
    if (!this.conn) return;
    const now = Date.now();
    for (const [id, entry] of this.tabs) if (now - entry.seen > 15000) this.tabs.delete(id);
    const entries = [...this.tabs.values()];
    if (this.me.sid) entries.push({sid: this.me.sid, cursor: this.tab.cursor(), visible: !document.hidden, ts: this.me.ts});
    const wanted = {};
    const live = entries.filter((e) => e.sid && !this.goneSids.has(e.sid));
    for (const e of live) wanted[e.sid] = Math.max(wanted[e.sid] || 0, e.cursor || 0);
    const rank = (e) => (e.visible ? 1e15 : 0) + (e.ts || 0);
    const best = live.sort((a, b) => rank(b) - rank(a))[0];
    this.conn.setTargets(wanted, best ? best.sid : null);
    Feeder.setServed(this.isServed());
  },

  receive(msg) {
    if (!msg || typeof msg !== "object") return;
    if (this.role === "leader") {
      if (msg.t === "want") {
        this.tabs.set(msg.tab, {sid: msg.sid, cursor: msg.cursor, visible: msg.visible, ts: msg.ts, seen: Date.now()});
        this.retarget();
        // A newcomer hears the state of things at once.
        if (this.lastStatus) this.bc.postMessage(this.lastStatus);
        if (this.lastInbox) this.bc.postMessage({t: "inbox", snapshot: this.lastInbox});
      } else if (msg.t === "bye") {
        this.tabs.delete(msg.tab);
        this.retarget();
      }
      return;
    }
    this.leaderSeen = Date.now();
    switch (msg.t) {
      case "ev":
        this.tab.event(msg.sid, msg.events);
        break;
      case "reset":
        this.tab.reset(msg.sid);
        break;
      case "gone":
        this.tab.gone(msg.sid);
        break;
      case "inbox":
        this.lastInbox = msg.snapshot;
        this.tab.inbox(msg.snapshot);
        break;
      case "status":
        this.lastStatus = msg;
        this.tab.status(msg.state, msg.mode, msg.served);
        Feeder.setServed(this.isServed());
        break;
      case "who":
        this.announce();
        break;
      default:
        break;
    }
  },

  /** Every few seconds: followers say they are still here (and notice a silent leader);
   *  the leader repeats its status (a heartbeat) and forgets tabs that went away. */
  tick() {
    if (this.role === "leader") {
      this.retarget();
      if (this.lastStatus) this.bc.postMessage(this.lastStatus);
    } else if (this.role === "follower") {
      this.announce();
      if (Date.now() - this.leaderSeen > this.LEADER_STALE_MS) {
        Status.set("reconnecting", this.lastStatus ? this.lastStatus.mode : Prefs.preferredTransport());
        Feeder.setServed(false);
      }
    }
  },

  bye() {
    if (this.bc && this.role === "follower") this.bc.postMessage({t: "bye", tab: Client.id});
  },

  /** The page is back (visible, focused, restored, online): its session becomes the one
   *  served live, and the connection skips its backoff. */
  nudge(reason) {
    this.me.ts = Date.now();
    this.announce();
    if (this.conn) {
      this.retarget();
      this.conn.nudge(reason);
    }
    Feeder.schedulePoll();
  },

  offline() {
    if (this.conn) this.conn.offline();
  },
};
