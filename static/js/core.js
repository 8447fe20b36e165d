/* Tether browser UI, part 1 of 5: shared helpers, the HTTP API, preferences, the indicator.
 *
 * The UI is plain JavaScript in five classic scripts loaded with `defer`, in order:
 *   core.js        el(), Api, Client, Prefs, Status (the connection indicator)
 *   link.js        the live connection: transports (SSE, WebSocket, long-poll), backoff, the
 *                  leader tab that holds it for every tab of this origin, and per-tab ingest
 *   transcript.js  Markdown, the transcript, tool calls by kind, approval and clarify cards
 *   changes.js     the Changes panel: the files the agent changed, their diffs, file views
 *   app.js         composer, sessions, inbox, settings, drawer, start-up
 * They share the global scope (top-level declarations of classic scripts are visible to each
 * other); nothing runs before DOMContentLoaded except declarations.
 *
 * Agent output is untrusted: nodes are built with createElement / textContent, and the only
 * HTML ever parsed (Markdown) goes through DOMPurify first.
 */
"use strict";

const $ = (id) => document.getElementById(id);

/** Build an element: el("p", {className: "x", text: "hi", attrs: {...}}, [children]). */
function el(tag, opts = {}, children = []) {
  const node = document.createElement(tag);
  if (opts.className) node.className = opts.className;
  if (opts.text !== undefined) node.textContent = opts.text;
  for (const [name, value] of Object.entries(opts.attrs || {})) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/** An inline SVG icon from a path list (no innerHTML). */
function icon(...paths) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  for (const d of paths) {
    const p = document.createElementNS(NS, "path");
    p.setAttribute("d", d);
    svg.append(p);
  }
  return svg;
}

function stringify(value) {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    // Claude tool results may be a list of content blocks.
    return value.map((b) => (b && b.type === "text" ? b.text : JSON.stringify(b, null, 2))).join("\n");
  }
  return value === undefined || value === null ? "" : JSON.stringify(value, null, 2);
}

function relativeTime(seconds) {
  const ago = Date.now() / 1000 - seconds;
  if (ago < 60) return "just now";
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}:${String(s % 60).padStart(2, "0")}`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** 1 s doubling to 30 s, with +-25 % jitter. */
function backoff(attempt) {
  const base = Math.min(30000, 1000 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/** This tab's label, sent as `client` with answers and shown to others as `by`. */
const Client = {
  tab: (() => {
    let tab = sessionStorage.getItem("tether-tab");
    if (!tab) {
      tab = Math.floor(Math.random() * 0x10000).toString(16).padStart(4, "0");
      sessionStorage.setItem("tether-tab", tab);
    }
    return tab;
  })(),
  get label() {
    const ua = navigator.userAgent;
    const name = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox"
      : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
    return `${name} · tab ${this.tab}`;
  },
  // Unique per page load (sessionStorage survives a reload and is copied to duplicated tabs).
  id: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
};

// ------------------------------------------------------------------ Api

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The server no longer knows this browser (its token changed, or the cookie expired): reload,
 *  and the server answers with its login form. Once per page. */
const SignedOut = {
  leaving: false,
  handle() {
    if (SignedOut.leaving) return;
    SignedOut.leaving = true;
    console.warn("tether: signed out (401); reloading to the login form");
    window.location.reload();
  },
};

/** A refused request (403 from the origin or host check, 429 from the login throttle) said in
 *  words at the top of the page, whatever view is open: a button that does nothing and shows
 *  nothing is the worst failure a proxy misconfiguration can produce. */
const Refused = {
  explain(status, code, message) {
    if (code === "forbidden") {
      const expected = /Origin must be (\S+)/.exec(message || "");
      return "The server refused this change as coming from another site (403): this page is " +
        `${location.origin}` + (expected ? `, the server expected ${expected[1]}` : "") +
        ". Behind a reverse proxy, forward X-Forwarded-Proto, -Host and -Port and list the " +
        "proxy in TETHER_TRUSTED_PROXIES (README, Deployment).";
    }
    if (code === "host_not_allowed") return `The server does not answer to this address (403): ${message}`;
    if (status === 429) return `The server is refusing logins from your address for now (429): ${message}`;
    return null;
  },
  show(text) {
    const banner = $("refused-banner");
    if (!banner) return;
    $("refused-text").textContent = text;
    banner.hidden = false;
  },
  hide() {
    const banner = $("refused-banner");
    if (banner) banner.hidden = true;
  },
};

const Api = {
  async request(method, path, body) {
    const init = {method, headers: {Accept: "application/json"}, cache: "no-store"};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (res.status === 401) SignedOut.handle();
    if (res.status === 204) return null;
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const err = (data && data.error) || {};
      const refused = Refused.explain(res.status, err.code, err.message);
      if (refused) Refused.show(refused);
      throw new ApiError(res.status, err.code || "http_" + res.status, err.message || res.statusText);
    }
    return data;
  },
  path: (id, rest = "") => `/api/sessions/${encodeURIComponent(id)}${rest}`,
  agents: () => Api.request("GET", "/api/agents"),
  logout: () => Api.request("POST", "/logout"),
  sessions: () => Api.request("GET", "/api/sessions"),
  session: (id) => Api.request("GET", Api.path(id)),
  /** ``options``: {model?, permission_mode?, resume?}; the agent's defaults when absent. */
  create: (agent, cwd, options = {}) => Api.request("POST", "/api/sessions",
    {agent, ...(cwd ? {cwd} : {}), ...options, client: Client.label}),
  conversations: (path, agent) => Api.request("GET",
    `/api/projects/conversations?${new URLSearchParams({path, agent})}`),
  projects: (path) => Api.request("GET", `/api/projects${path ? `?${new URLSearchParams({path})}` : ""}`),
  recentProjects: () => Api.request("GET", "/api/projects/recent"),
  /** A model or mode change names this tab (``by`` in its ``model`` / ``mode`` event). */
  update: (id, fields) => Api.request("PATCH", Api.path(id),
    "model" in fields || "permission_mode" in fields ? {...fields, client: Client.label} : fields),
  remove: (id) => Api.request("DELETE", Api.path(id)),
  prompt: (id, text, queue = false, images = []) => Api.request("POST", Api.path(id, "/prompt"),
    {text, ...(queue ? {queue} : {}), ...(images.length ? {images} : {})}),
  imageUrl: (id, sha256) => Api.path(id, `/images/${encodeURIComponent(sha256)}`),
  sendQueued: (id, n, queueId) => Api.request("POST", Api.path(id,
    `/queue/${n}/send?${new URLSearchParams({queue_id: queueId})}`)),
  unqueue: (id, n, queueId) => Api.request("DELETE", Api.path(id,
    `/queue/${n}?${new URLSearchParams({queue_id: queueId})}`)),
  cancel: (id) => Api.request("POST", Api.path(id, "/cancel")),
  events: (id, after, limit = 1000) => Api.request("GET", Api.path(id,
    `/events?${new URLSearchParams({after: String(after), wait: "0", limit: String(limit)})}`)),
  inbox: () => Api.request("GET", "/api/inbox"),
  approve: (id, requestId, body) => Api.request("POST",
    Api.path(id, `/approvals/${encodeURIComponent(requestId)}`), {...body, client: Client.label}),
  clarify: (id, requestId, answers) => Api.request("POST",
    Api.path(id, `/clarify/${encodeURIComponent(requestId)}`), {answers, client: Client.label}),
  transcriptUrl: (id) => Api.path(id, "/transcript.jsonl"),
  filePath: (path) => path.split("/").map(encodeURIComponent).join("/"),
  changes: (id) => Api.request("GET", Api.path(id, "/changes")),
  fileDiff: (id, path) => Api.request("GET", Api.path(id, `/changes/${Api.filePath(path)}`)),
  file: (id, path) => Api.request("GET", Api.path(id, `/files/${Api.filePath(path)}`)),
};

// ------------------------------------------------------------------ Prefs

/** The transport: `?transport=sse|ws|poll` in the URL wins over the saved setting. */
const Prefs = {
  TRANSPORTS: ["sse", "ws", "poll"],
  get savedTransport() {
    try {
      const saved = localStorage.getItem("tether-transport");
      return this.TRANSPORTS.includes(saved) ? saved : "sse";
    } catch (err) {
      return "sse";
    }
  },
  set savedTransport(value) {
    try {
      if (value === "sse") localStorage.removeItem("tether-transport");
      else localStorage.setItem("tether-transport", value);
    } catch (err) { /* private mode: the choice lasts for this page only */ }
  },
  get urlTransport() {
    const asked = new URLSearchParams(location.search).get("transport");
    return this.TRANSPORTS.includes(asked) ? asked : null;
  },
  /** The transport asked for (the URL, else the setting); EventSource missing means
   *  long-poll. */
  chosenTransport() {
    let mode = this.urlTransport || this.savedTransport;
    if (mode === "ws" && typeof window.WebSocket !== "function") mode = "sse";
    if (mode === "sse" && typeof window.EventSource !== "function") mode = "poll";
    return mode;
  },
  /** What to try first: the chosen transport, unless it lately delivered nothing here (a
   *  proxy that buffers streams, link.js Conn.distrust) and the one it fell back to worked.
   *  A transport asked for in the URL is tried whatever happened before. */
  preferredTransport() {
    let mode = this.chosenTransport();
    if (this.urlTransport) return mode;
    const fallbacks = this.fallbacks;
    for (let hops = 0; fallbacks[mode] && hops < 3; hops++) mode = fallbacks[mode];
    return mode;
  },

  // Fallbacks are kept per origin (localStorage is) for FALLBACK_MS, as
  // {"sse": {"to": "poll", "until": <ms since the epoch>}}.
  FALLBACK_KEY: "tether-transport-fallback",
  FALLBACK_MS: 24 * 3600 * 1000,
  /** {from: to} for each transport that fell back here within the last day. */
  get fallbacks() {
    const live = {};
    for (const [from, entry] of Object.entries(this.keptFallbacks())) {
      if (entry && this.TRANSPORTS.includes(entry.to) && entry.until > Date.now()) live[from] = entry.to;
    }
    return live;
  },
  keptFallbacks() {
    try {
      const kept = JSON.parse(localStorage.getItem(this.FALLBACK_KEY) || "{}");
      return kept && typeof kept === "object" && !Array.isArray(kept) ? kept : {};
    } catch (err) {
      return {}; // unreadable, or private mode: nothing kept
    }
  },
  /** Remember for a day that `from` delivered nothing here and `to` worked. */
  rememberFallback(from, to) {
    this.keepFallbacks((kept) => { kept[from] = {to, until: Date.now() + this.FALLBACK_MS}; });
  },
  /** Streaming works here again: forget every fallback. */
  forgetFallbacks() {
    this.keepFallbacks((kept) => { for (const from of Object.keys(kept)) delete kept[from]; });
  },
  keepFallbacks(change) {
    const kept = this.keptFallbacks();
    change(kept);
    try {
      if (Object.keys(kept).length) localStorage.setItem(this.FALLBACK_KEY, JSON.stringify(kept));
      else localStorage.removeItem(this.FALLBACK_KEY);
    } catch (err) { /* private mode: the fallback lasts for this page only */ }
  },
};

// ------------------------------------------------------------------ Status

/** The connection indicator. A drop shorter than BLIP_MS shows nothing: the indicator keeps
 *  saying "Connected" until the trouble has lasted that long. */
const Status = {
  BLIP_MS: 3000,
  NAMES: {sse: "SSE", ws: "WebSocket", poll: "long-poll"},
  LABELS: {idle: "Not connected", connecting: "Connecting", connected: "Connected",
    reconnecting: "Reconnecting", offline: "Offline", gone: "Session gone"},
  shown: {state: "idle", mode: null},
  wanted: {state: "idle", mode: null},
  since: 0,
  timer: null,
  listeners: [],

  set(state, mode) {
    const degraded = state === "reconnecting" || state === "offline";
    const was = this.wanted;
    this.wanted = {state, mode: mode || null};
    const wasDegraded = was.state === "reconnecting" || was.state === "offline";
    if (degraded && this.shown.state === "connected") {
      // Hold "connected" for the blip window, then tell the truth.
      if (!wasDegraded) this.since = Date.now();
      const left = this.BLIP_MS - (Date.now() - this.since);
      if (left > 0) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.render(this.wanted), left);
        return;
      }
    }
    clearTimeout(this.timer);
    this.timer = null;
    this.render(this.wanted);
  },

  render({state, mode}) {
    this.shown = {state, mode};
    const node = $("conn");
    node.dataset.state = state;
    node.dataset.transport = mode || "";
    const label = this.LABELS[state] || state;
    $("conn-text").textContent = mode && state !== "idle" && state !== "gone" ? `${label} · ${this.NAMES[mode]}` : label;
    for (const fn of this.listeners) fn(this.shown);
  },

  /** True when the page cannot hear the server right now (shown, not merely blipping). */
  get away() {
    return this.shown.state === "offline" || this.shown.state === "reconnecting";
  },
};
