/* Tether browser UI: plain JavaScript, no build step, no framework.
 *
 * One object per concern:
 *   Api         JSON calls to the HTTP API
 *   Status      the connection indicator (connected / reconnecting / offline, and transport)
 *   Transport   one live feed of the selected session: EventSource, falling back to long-poll
 *   Transcript  renders events into the transcript; ignores any event id <= the last one seen
 *   Cards       approval and clarify cards (pending, answered, answered elsewhere)
 *   Composer    prompt box, Send / Stop, local presets, turn indicator
 *   Sessions    session list, agent picker, selection (kept in the URL as #s=<id>)
 *   Drawer      the session list as a drawer on narrow screens
 *
 * Every node is built with createElement / textContent: agent output is untrusted.
 */
"use strict";

(() => {
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

  const FOLD_LINES = 12;
  const FOLD_CHARS = 1200; // a few very long lines fold too
  const lineCount = (text) => (text.match(/\n/g) || []).length + 1;

  /** A <pre>, wrapped in a closed <details> past FOLD_LINES lines, or FOLD_CHARS when the
   *  text wraps (inputs wrap; command output keeps its columns and scrolls sideways). */
  function foldable(text, label, className, wraps = true) {
    const pre = el("pre", {className, text});
    const lines = lineCount(text);
    if (lines <= FOLD_LINES && (!wraps || text.length <= FOLD_CHARS)) return pre;
    return el("details", {className: "fold"}, [el("summary", {text: `${label} · ${lines} lines`}), pre]);
  }

  /** Plain text with `inline code` and ``` fenced blocks, built as nodes (never HTML). */
  function richText(container, text) {
    container.replaceChildren();
    text.split("```").forEach((part, i) => {
      if (i % 2 === 1) {
        const body = part.replace(/^[\w+-]*\n/, "");
        container.append(el("pre", {className: "code-block", text: body.replace(/\n$/, "")}));
        return;
      }
      part.split(/`([^`\n]+)`/).forEach((piece, j) => {
        if (!piece) return;
        container.append(j % 2 ? el("code", {text: piece}) : document.createTextNode(piece));
      });
    });
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

  /** This tab's label, sent as `client` with answers and shown to others as `by`. */
  const Client = {
    label: (() => {
      const ua = navigator.userAgent;
      const name = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox"
        : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
      let tab = sessionStorage.getItem("tether-tab");
      if (!tab) {
        tab = Math.floor(Math.random() * 0x10000).toString(16).padStart(4, "0");
        sessionStorage.setItem("tether-tab", tab);
      }
      return `${name} · tab ${tab}`;
    })(),
  };

  // ------------------------------------------------------------------ Api

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const Api = {
    async request(method, path, body) {
      const init = {method, headers: {Accept: "application/json"}, cache: "no-store"};
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const res = await fetch(path, init);
      if (res.status === 204) return null;
      const data = await res.json().catch(() => null);
      if (!res.ok) {
        const err = (data && data.error) || {};
        throw new ApiError(res.status, err.code || "http_" + res.status, err.message || res.statusText);
      }
      return data;
    },
    agents: () => Api.request("GET", "/api/agents"),
    sessions: () => Api.request("GET", "/api/sessions"),
    session: (id) => Api.request("GET", `/api/sessions/${encodeURIComponent(id)}`),
    create: (agent) => Api.request("POST", "/api/sessions", {agent}),
    prompt: (id, text) => Api.request("POST", `/api/sessions/${encodeURIComponent(id)}/prompt`, {text}),
    cancel: (id) => Api.request("POST", `/api/sessions/${encodeURIComponent(id)}/cancel`),
    approve: (id, requestId, decision, message) => Api.request("POST",
      `/api/sessions/${encodeURIComponent(id)}/approvals/${encodeURIComponent(requestId)}`,
      {decision, message: message || undefined, client: Client.label}),
    clarify: (id, requestId, answers) => Api.request("POST",
      `/api/sessions/${encodeURIComponent(id)}/clarify/${encodeURIComponent(requestId)}`,
      {answers, client: Client.label}),
  };

  // ------------------------------------------------------------------ Status

  const Status = {
    node: $("conn"),
    text: $("conn-text"),
    set(state, transport) {
      const names = {sse: "SSE", poll: "long-poll"};
      const labels = {idle: "Not connected", connecting: "Connecting", connected: "Connected",
        reconnecting: "Reconnecting", offline: "Offline", gone: "Session gone"};
      this.node.dataset.state = state;
      this.node.dataset.transport = transport || "";
      const label = labels[state] || state;
      this.text.textContent = transport && state !== "idle" ? `${label} · ${names[transport]}` : label;
    },
  };

  // ------------------------------------------------------------------ Transport

  /** The selected session's live feed. SSE first; long-poll when EventSource is missing or
   *  fails 3 times without ever reaching caught-up. Reconnects with backoff from the cursor
   *  (the Transcript's last event id); duplicates are dropped by the Transcript. */
  const Transport = {
    POLL_WAIT: 25,
    SSE_FAILURES_BEFORE_POLL: 3,
    STALE_MS: 45000, // three missed keepalives: a half-open connection
    handlers: null,
    sessionId: null,
    mode: null,
    gen: 0,
    es: null,
    abort: null,
    timer: null,
    attempt: 0,
    sseFailures: 0,
    everCaughtUp: false,
    caughtUp: false,
    lastSeen: 0,
    epoch: null,

    start(sessionId, handlers) {
      this.stop();
      Object.assign(this, {sessionId, handlers, attempt: 0, sseFailures: 0, everCaughtUp: false});
      if (this.mode !== "poll") this.mode = typeof window.EventSource === "function" ? "sse" : "poll";
      this.connect();
    },

    stop() {
      this.gen += 1;
      clearTimeout(this.timer);
      this.closeSse();
      if (this.abort) this.abort.abort();
      this.abort = null;
      this.sessionId = null;
    },

    connect() {
      clearTimeout(this.timer);
      Status.set(this.attempt ? "reconnecting" : "connecting", this.mode);
      if (this.mode === "sse") this.openSse();
      else this.poll();
    },

    url(path, params) {
      return `/api/sessions/${encodeURIComponent(this.sessionId)}/${path}?${new URLSearchParams(params)}`;
    },

    closeSse() {
      if (this.es) this.es.close();
      this.es = null;
    },

    openSse() {
      const gen = this.gen;
      const params = {after: String(this.handlers.cursor())};
      if (this.epoch) params.epoch = this.epoch;
      const es = new EventSource(this.url("stream", params));
      const live = (fn) => (e) => { if (gen === this.gen && es === this.es) fn(e); };
      this.es = es;
      this.caughtUp = false;
      this.lastSeen = Date.now();
      es.onmessage = live((e) => {
        this.lastSeen = Date.now();
        this.deliver(e.data);
      });
      es.addEventListener("caught-up", live((e) => {
        const info = JSON.parse(e.data);
        this.epoch = info.epoch;
        Object.assign(this, {caughtUp: true, everCaughtUp: true, attempt: 0, sseFailures: 0,
          lastSeen: Date.now()});
        Status.set("connected", "sse");
      }));
      es.addEventListener("reset", live((e) => {
        const info = JSON.parse(e.data);
        this.epoch = info.epoch;
        this.handlers.onReset();
      }));
      es.addEventListener("ping", live(() => { this.lastSeen = Date.now(); }));
      // Any error: close and recreate ourselves, with backoff, from our own cursor. This also
      // covers readyState CLOSED (a non-200 answer), after which a browser never retries.
      es.onerror = live(() => this.failed(true));
    },

    deliver(data) {
      let event;
      try {
        event = JSON.parse(data);
      } catch (err) {
        console.error("tether: unparsable event", err);
        return;
      }
      this.handlers.onEvent(event);
    },

    async poll() {
      const gen = this.gen;
      let wait = 0; // the first request answers at once: caught up, then long-poll
      while (gen === this.gen) {
        const ctrl = new AbortController();
        this.abort = ctrl;
        const timeout = setTimeout(() => ctrl.abort(), (wait + 15) * 1000);
        let page;
        try {
          const res = await fetch(this.url("events", {after: this.handlers.cursor(), wait, limit: 500}),
            {signal: ctrl.signal, cache: "no-store", headers: {Accept: "application/json"}});
          if (res.status === 404) {
            if (gen === this.gen) this.gone();
            return;
          }
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          page = await res.json();
        } catch (err) {
          if (gen === this.gen) this.failed(false);
          return;
        } finally {
          clearTimeout(timeout);
        }
        if (gen !== this.gen) return;
        this.attempt = 0;
        Status.set("connected", "poll");
        const epochChanged = this.epoch && page.epoch !== this.epoch;
        this.epoch = page.epoch;
        if (page.reset || epochChanged) {
          this.handlers.onReset();
          if (!page.reset) { wait = 0; continue; } // that page was read from a stale cursor
        }
        for (const event of page.events) this.handlers.onEvent(event);
        wait = this.POLL_WAIT;
      }
    },

    /** A connection failed: maybe fall back to long-poll, then retry with backoff. */
    failed(sse) {
      this.closeSse();
      this.attempt += 1;
      if (sse && !this.caughtUp) this.sseFailures += 1;
      if (sse && !this.everCaughtUp && this.sseFailures >= this.SSE_FAILURES_BEFORE_POLL) {
        this.mode = "poll";
        this.attempt = 0;
        this.connect();
        return;
      }
      const delay = this.backoff(this.attempt);
      const offline = navigator.onLine === false || this.attempt > 4;
      Status.set(offline ? "offline" : "reconnecting", this.mode);
      const gen = this.gen;
      this.timer = setTimeout(() => {
        this.timer = null;
        if (gen === this.gen) this.reconnect();
      }, delay);
    },

    /** 1 s doubling to 30 s, with +-25 % jitter. */
    backoff(attempt) {
      const base = Math.min(30000, 1000 * 2 ** Math.max(0, attempt - 1));
      return Math.round(base * (0.75 + Math.random() * 0.5));
    },

    /** Before reopening, ask whether the session still exists: a 404 stops for good. */
    async reconnect() {
      const gen = this.gen;
      try {
        await Api.session(this.sessionId);
      } catch (err) {
        if (gen !== this.gen) return;
        if (err instanceof ApiError && err.status === 404) this.gone();
        else this.failed(false);
        return;
      }
      if (gen === this.gen) this.connect();
    },

    /** Skip the remaining backoff (network back, tab visible again). */
    nudge() {
      if (this.sessionId && this.timer) {
        clearTimeout(this.timer);
        this.timer = null;
        this.reconnect();
      }
    },

    /** The browser says the network is gone: drop the connection now and wait for `online`
     *  (or the backoff) instead of trusting a socket that may be half-open. */
    offline() {
      if (!this.sessionId) return;
      if (this.mode === "poll") {
        if (this.abort) this.abort.abort(); // the poll loop's catch schedules the retry
      } else if (this.es) {
        this.failed(false);
      }
    },

    watchdog() {
      if (this.mode === "sse" && this.es && this.caughtUp && Date.now() - this.lastSeen > this.STALE_MS) {
        this.failed(true);
      }
    },

    gone() {
      this.stop();
      Status.set("gone");
      this.handlers && this.handlers.onGone();
    },
  };

  // ------------------------------------------------------------------ Transcript

  const Transcript = {
    root: $("transcript"),
    scroller: $("transcript-wrap"),
    lastId: 0,
    streaming: null,
    tools: new Map(),
    cards: new Map(),
    turnActive: false,
    pinned: true,

    clear() {
      this.root.replaceChildren();
      Object.assign(this, {lastId: 0, streaming: null, turnActive: false, pinned: true});
      this.tools.clear();
      this.cards.clear();
      Composer.update();
    },

    /** Apply one event exactly once: anything at or below the cursor was already rendered. */
    apply(event) {
      if (typeof event.id !== "number" || event.id <= this.lastId) return;
      this.lastId = event.id;
      const render = this.renderers[event.kind];
      try {
        if (render) render.call(this, event);
      } catch (err) {
        console.error("tether: cannot render event", event, err);
      }
      Sessions.noteEvent(event);
      Composer.update();
      this.stickToBottom();
    },

    add(node, event) {
      node.dataset.eventId = String(event.id);
      node.dataset.kind = event.kind;
      this.root.append(node);
      return node;
    },

    endStreaming() {
      if (this.streaming) this.streaming.classList.remove("streaming");
      this.streaming = null;
    },

    stickToBottom() {
      if (!this.pinned || this.scrollQueued) return;
      this.scrollQueued = true;
      requestAnimationFrame(() => {
        this.scrollQueued = false;
        this.scroller.scrollTop = this.scroller.scrollHeight;
      });
    },

    onScroll() {
      const s = this.scroller;
      this.pinned = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
    },

    notice(event, text, tone) {
      return this.add(el("li", {className: `item notice notice-${tone}`, text}), event);
    },

    renderers: {
      user(event) {
        this.endStreaming();
        this.turnActive = true;
        this.add(el("li", {className: "item msg msg-user"}, [el("div", {className: "bubble", text: event.text})]), event);
      },
      agent_session(event) {
        const model = event.model && event.model !== event.agent ? ` · ${event.model}` : "";
        $("session-meta").textContent = `${event.agent} agent${model}`;
      },
      text_delta(event) {
        if (!this.streaming) {
          const body = el("div", {className: "bubble"});
          this.streaming = this.add(el("li", {className: "item msg msg-agent streaming"}, [body]), event);
        }
        this.streaming.firstChild.append(document.createTextNode(event.text));
      },
      text(event) {
        // The full text of the block whose deltas just streamed: it replaces them in place.
        let item = this.streaming;
        if (!item) item = this.add(el("li", {className: "item msg msg-agent"}, [el("div", {className: "bubble"})]), event);
        item.dataset.eventId = String(event.id);
        item.dataset.kind = "text";
        richText(item.firstChild, event.text);
        this.endStreaming();
      },
      thinking(event) {
        this.endStreaming();
        const box = el("details", {className: "thinking"}, [el("summary", {text: "Thinking"}),
          el("p", {text: event.text})]);
        this.add(el("li", {className: "item"}, [box]), event);
      },
      tool_use(event) {
        this.endStreaming();
        this.add(Tools.block(event), event);
      },
      tool_result(event) {
        Tools.result(event);
      },
      approval_request(event) {
        this.endStreaming();
        Cards.place(Cards.approval(event), event);
      },
      approval_resolved(event) {
        Cards.resolved(event);
      },
      clarify_request(event) {
        this.endStreaming();
        Cards.place(Cards.clarify(event), event);
      },
      clarify_resolved(event) {
        Cards.resolved(event);
      },
      result(event) {
        this.endStreaming();
        const parts = [];
        if (typeof event.duration_ms === "number") parts.push(`${(event.duration_ms / 1000).toFixed(1)} s`);
        if (typeof event.cost_usd === "number") {
          parts.push(`$${event.cost_usd.toFixed(event.cost_usd && event.cost_usd < 0.01 ? 4 : 2)}`);
        }
        const out = event.usage && event.usage.output_tokens;
        if (typeof out === "number") parts.push(`${out} tokens out`);
        const head = event.is_error ? "Error" : "Done";
        const line = el("li", {className: `item result${event.is_error ? " result-error" : ""}`,
          text: [head, ...parts].join(" · ")});
        if (event.is_error && event.text) line.append(el("span", {className: "result-text", text: event.text}));
        this.add(line, event);
      },
      error(event) {
        this.endStreaming();
        const item = el("li", {className: "item notice notice-error", attrs: {role: "alert"}},
          [el("strong", {text: "Error: "}), document.createTextNode(event.message || "unknown error")]);
        this.add(item, event);
      },
      turn_end(event) {
        this.endStreaming();
        this.turnActive = false;
        const labels = {cancelled: "Stopped", timeout: "Timed out", error: "Ended by an error",
          interrupted: "Interrupted: the server restarted"};
        if (labels[event.reason]) this.notice(event, labels[event.reason], "warn");
        else this.add(el("li", {className: "item turn-rule", attrs: {"aria-hidden": "true"}}), event);
      },
    },
  };

  // ------------------------------------------------------------------ Tools

  const Tools = {
    summary(name, input) {
      if (!input || typeof input !== "object") return "";
      if (name === "AskUserQuestion") return "";
      return input.description || input.file_path || input.path || input.pattern || input.url || "";
    },

    block(event) {
      const input = event.input || {};
      const head = el("div", {className: "tool-head"}, [
        el("span", {className: "tool-name", text: event.name === "AskUserQuestion" ? "Question" : event.name}),
        el("span", {className: "tool-summary", text: this.summary(event.name, input)}),
      ]);
      const box = el("li", {className: "item tool", attrs: {"data-tool-use-id": event.tool_use_id,
        "data-tool-name": event.name}}, [head]);
      if (event.name === "Bash" && typeof input.command === "string") {
        box.append(foldable(`$ ${input.command}`, "Command", "tool-input"));
      } else if (event.name !== "AskUserQuestion") {
        box.append(foldable(JSON.stringify(input, null, 2), "Input", "tool-input"));
      }
      Transcript.tools.set(event.tool_use_id, box);
      return box;
    },

    result(event) {
      const text = stringify(event.content) || "(no output)";
      const box = Transcript.tools.get(event.tool_use_id);
      // Shell output keeps its columns (scrolls sideways, like a terminal); other results wrap.
      const terminal = Boolean(box) && box.dataset.toolName === "Bash" && !event.is_error;
      const out = el("div", {className: `tool-output${event.is_error ? " is-error" : ""}`},
        [foldable(text, event.is_error ? "Error output" : "Output",
          `tool-output-text${terminal ? " terminal" : ""}`, !terminal)]);
      out.dataset.eventId = String(event.id);
      out.dataset.kind = event.kind;
      if (box) box.append(out);
      else Transcript.root.append(el("li", {className: "item tool"}, [out]));
    },
  };

  // ------------------------------------------------------------------ Cards

  const Cards = {
    /** Cards sit inside their tool call's block when there is one, else on their own. */
    place(card, event) {
      card.dataset.eventId = String(event.id);
      card.dataset.kind = event.kind;
      Transcript.cards.set(event.request_id, card);
      const box = event.tool_use_id && Transcript.tools.get(event.tool_use_id);
      if (box) box.append(card);
      else Transcript.root.append(el("li", {className: "item"}, [card]));
    },

    shell(event, kicker, title) {
      return el("div", {className: "card", attrs: {"data-request-id": event.request_id, "data-state": "pending"}},
        [el("div", {className: "card-head"}, [el("span", {className: "card-kicker", text: kicker}),
          el("p", {className: "card-title", text: title})])]);
    },

    approval(event) {
      const nested = event.tool_use_id && Transcript.tools.has(event.tool_use_id);
      const card = this.shell(event, "Needs your approval", `Allow ${event.tool_name}?`);
      card.classList.add("card-approval");
      if (event.description && !nested) card.append(el("p", {className: "card-desc", text: event.description}));
      const input = event.input || {};
      const shown = event.tool_name === "Bash" && typeof input.command === "string"
        ? `$ ${input.command}` : JSON.stringify(input, null, 2);
      // Nested in its tool call's block, the command is shown right above the card.
      if (!nested) card.append(foldable(shown, "Input", "card-input"));
      const message = el("input", {className: "card-message", attrs: {type: "text", maxlength: "2000",
        placeholder: "Message for the agent (optional)", "aria-label": `Message with your answer to ${event.tool_name}`}});
      const allow = el("button", {className: "btn btn-allow", text: "Allow", attrs: {type: "button"}});
      const deny = el("button", {className: "btn btn-deny", text: "Deny", attrs: {type: "button"}});
      const send = (decision) => this.submit(card, () => Api.approve(Sessions.currentId, event.request_id, decision, message.value.trim()));
      allow.addEventListener("click", () => send("allow"));
      deny.addEventListener("click", () => send("deny"));
      card.append(el("div", {className: "card-actions"}, [message, el("div", {className: "btn-row"}, [allow, deny])]),
        el("p", {className: "card-outcome", attrs: {role: "status"}}));
      return card;
    },

    clarify(event) {
      const questions = event.questions || [];
      const card = this.shell(event, "Question for you", questions.length === 1 ? questions[0].question : `${questions.length} questions`);
      card.classList.add("card-clarify");
      const direct = questions.length === 1 && !questions[0].multi_select; // one tap answers
      const state = questions.map(() => ({picked: new Set(), other: null}));
      const collect = () => {
        const answers = {};
        questions.forEach((q, i) => {
          const parts = [...state[i].picked];
          const other = state[i].other.value.trim();
          if (other) parts.push(other);
          if (parts.length) answers[q.question] = parts.join(", ");
        });
        return answers;
      };
      const send = (answers) => {
        if (Object.keys(answers).length) this.submit(card, () => Api.clarify(Sessions.currentId, event.request_id, answers));
      };
      questions.forEach((q, i) => {
        const group = el("div", {className: "question", attrs: {role: "group", "aria-label": q.question}});
        if (questions.length > 1) group.append(el("p", {className: "question-text", text: q.question}));
        else if (q.header && q.header !== q.question) group.append(el("span", {className: "chip", text: q.header}));
        const options = el("div", {className: "options"});
        for (const opt of q.options || []) {
          const btn = el("button", {className: "btn btn-option", attrs: {type: "button", "aria-pressed": direct ? undefined : "false"}},
            [el("span", {className: "option-label", text: opt.label})]);
          if (opt.description) btn.append(el("span", {className: "option-desc", text: opt.description}));
          btn.addEventListener("click", () => {
            if (direct) return send({[q.question]: opt.label});
            const picked = state[i].picked;
            if (!q.multi_select) {
              picked.clear();
              options.querySelectorAll("[aria-pressed]").forEach((b) => b.setAttribute("aria-pressed", "false"));
            }
            if (picked.has(opt.label)) picked.delete(opt.label); else picked.add(opt.label);
            btn.setAttribute("aria-pressed", String(picked.has(opt.label)));
          });
          options.append(btn);
        }
        const other = el("input", {className: "card-message", attrs: {type: "text", maxlength: "2000",
          placeholder: "Or type your own answer", "aria-label": `Your own answer to: ${q.question}`}});
        state[i].other = other;
        other.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); send(collect()); } });
        group.append(options, other);
        card.append(group);
      });
      const submit = el("button", {className: "btn btn-primary", text: direct ? "Answer" : "Send answers", attrs: {type: "button"}});
      submit.addEventListener("click", () => send(collect()));
      card.append(el("div", {className: "card-actions"}, [el("div", {className: "btn-row"}, [submit])]),
        el("p", {className: "card-outcome", attrs: {role: "status"}}));
      return card;
    },

    /** POST an answer. A 409 means another client answered first: say so, never drop it. */
    async submit(card, call) {
      if (card.dataset.state !== "pending") return;
      this.setBusy(card, true);
      try {
        await call();
        if (card.dataset.state === "busy") this.outcome(card, "Sent…");
      } catch (err) {
        if (card.dataset.state !== "busy") return; // the resolved event already said it all
        if (err instanceof ApiError && err.status === 409) this.finish(card, "elsewhere", "Already answered elsewhere");
        else if (err instanceof ApiError && err.status === 404) this.finish(card, "elsewhere", "No longer waiting for an answer");
        else {
          this.setBusy(card, false);
          this.outcome(card, `Could not send: ${err.message}`);
        }
      }
    },

    setBusy(card, busy) {
      card.dataset.state = busy ? "busy" : "pending";
      card.querySelectorAll("button, input").forEach((n) => { n.disabled = busy; });
      Composer.update();
    },

    outcome(card, text) {
      card.querySelector(".card-outcome").textContent = text;
    },

    /** Read-only from now on: drop the controls, keep the question and the outcome. */
    finish(card, state, text) {
      card.dataset.state = state;
      const actions = card.querySelector(".card-actions");
      if (actions) actions.remove();
      card.querySelectorAll("button, input").forEach((n) => { n.disabled = true; });
      card.querySelectorAll(".question .card-message").forEach((n) => n.remove());
      this.outcome(card, text);
      Composer.update();
    },

    resolved(event) {
      const card = Transcript.cards.get(event.request_id);
      if (!card) return;
      const by = event.by === Client.label ? "you" : event.by || "someone";
      let state, text;
      if (event.reason === "timeout") [state, text] = ["timeout", "Timed out"];
      else if (event.reason === "cancelled") [state, text] = ["cancelled", "Cancelled"];
      else if (event.kind === "clarify_resolved") {
        const answers = Object.entries(event.answers || {}).map(([q, a]) => `${q} → ${a}`).join("; ");
        [state, text] = ["answered", `Answered by ${by}${answers ? ": " + answers : ""}`];
      } else if (event.decision === "allow") [state, text] = ["allowed", `Allowed by ${by}`];
      else [state, text] = ["denied", `Denied by ${by}${event.message ? ": " + event.message : ""}`];
      if (event.kind === "clarify_resolved" && event.answers) this.markPicked(card, event.answers);
      this.finish(card, state, text);
    },

    markPicked(card, answers) {
      const chosen = new Set(Object.values(answers).flatMap((a) => String(a).split(", ")));
      card.querySelectorAll(".btn-option").forEach((b) => {
        b.classList.toggle("picked", chosen.has(b.querySelector(".option-label").textContent));
      });
    },

    pendingCount() {
      let n = 0;
      for (const card of Transcript.cards.values()) if (["pending", "busy"].includes(card.dataset.state)) n += 1;
      return n;
    },
  };

  // ------------------------------------------------------------------ Composer

  const Composer = {
    form: $("composer"),
    input: $("prompt"),
    send: $("send-btn"),
    stop: $("stop-btn"),
    error: $("composer-error"),
    sending: false,
    stopping: false,

    init() {
      this.form.addEventListener("submit", (e) => { e.preventDefault(); this.submit(this.input.value); });
      this.input.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          this.submit(this.input.value);
        }
      });
      this.input.addEventListener("input", () => this.grow());
      this.stop.addEventListener("click", () => this.cancel());
      document.querySelectorAll("[data-preset]").forEach((b) => {
        b.addEventListener("click", () => this.submit(b.dataset.preset, true));
      });
    },

    grow() {
      this.input.style.height = "auto";
      this.input.style.height = `${Math.min(this.input.scrollHeight, 200)}px`;
    },

    showError(text) {
      this.error.textContent = text || "";
      this.error.hidden = !text;
    },

    async submit(raw, preset = false) {
      const text = raw.trim();
      const id = Sessions.currentId;
      if (!text || !id || this.sending) return;
      if (Transcript.turnActive) return this.showError("The agent is still working: wait, or Stop it first.");
      this.sending = true;
      this.showError("");
      this.update();
      try {
        await Api.prompt(id, text);
        if (!preset) {
          this.input.value = "";
          this.grow();
        }
        Transcript.pinned = true;
      } catch (err) {
        this.showError(err.code === "session_busy" ? "The agent is still working on the previous turn." : `Could not send: ${err.message}`);
      } finally {
        this.sending = false;
        this.update();
      }
    },

    async cancel() {
      if (!Sessions.currentId || this.stopping) return;
      this.stopping = true;
      this.update();
      try {
        await Api.cancel(Sessions.currentId);
      } catch (err) {
        this.showError(`Could not stop: ${err.message}`);
      } finally {
        this.stopping = false;
        this.update();
      }
    },

    /** Reflect the turn state: running indicator, Stop only while a turn runs. */
    update() {
      const running = Transcript.turnActive;
      const waiting = running ? Cards.pendingCount() : 0;
      this.stop.hidden = !running;
      this.stop.disabled = this.stopping;
      this.send.disabled = running || this.sending;
      document.querySelectorAll("[data-preset]").forEach((b) => { b.disabled = running || this.sending; });
      $("turn-status").hidden = !running;
      $("turn-status").dataset.waiting = waiting ? "true" : "false";
      $("turn-status-text").textContent = waiting ? "Waiting for your answer" : this.stopping ? "Stopping…" : "Working…";
    },
  };

  // ------------------------------------------------------------------ Drawer

  const Drawer = {
    node: $("drawer"),
    scrim: $("scrim"),
    button: $("menu-btn"),
    narrow: window.matchMedia("(max-width: 899px)"),

    init() {
      this.button.addEventListener("click", () => this.open());
      $("drawer-close").addEventListener("click", () => this.close());
      this.scrim.addEventListener("click", () => this.close());
      document.addEventListener("keydown", (e) => { if (e.key === "Escape" && this.isOpen()) this.close(); });
    },
    isOpen: () => document.body.classList.contains("drawer-open"),
    open() {
      document.body.classList.add("drawer-open");
      this.scrim.hidden = false;
      this.button.setAttribute("aria-expanded", "true");
      $("agent-select").focus();
    },
    close() {
      if (!this.isOpen()) return;
      document.body.classList.remove("drawer-open");
      this.scrim.hidden = true;
      this.button.setAttribute("aria-expanded", "false");
      if (this.narrow.matches) this.button.focus();
    },
  };

  // ------------------------------------------------------------------ Sessions

  const Sessions = {
    list: [],
    currentId: null,
    current: null,
    listNode: $("session-list"),
    select: $("agent-select"),

    async init() {
      $("new-session").addEventListener("submit", (e) => { e.preventDefault(); this.create(); });
      $("empty-new").addEventListener("click", () => this.create());
      window.addEventListener("hashchange", () => this.show(this.fromHash()));
      this.loadAgents();
      await this.refresh();
      this.show(this.fromHash());
      setInterval(() => { if (!document.hidden) this.refresh(); }, 15000);
    },

    fromHash() {
      const match = /(?:^#|&)s=([^&]+)/.exec(location.hash);
      return match ? decodeURIComponent(match[1]) : null;
    },

    async loadAgents() {
      try {
        const {agents} = await Api.agents();
        const preferred = document.body.dataset.defaultAgent;
        this.select.replaceChildren(...agents.map((a) => el("option", {
          text: a.available ? a.name : `${a.name} (unavailable)`,
          attrs: {value: a.name, disabled: !a.available, title: a.description},
        })));
        const pick = agents.find((a) => a.available && a.name === preferred) || agents.find((a) => a.available);
        if (pick) this.select.value = pick.name;
        $("new-session-btn").disabled = !pick;
      } catch (err) {
        this.select.replaceChildren(el("option", {text: "agents unavailable", attrs: {value: ""}}));
      }
    },

    async refresh() {
      try {
        const {sessions} = await Api.sessions();
        this.list = sessions.sort((a, b) => b.created_at - a.created_at);
        this.renderList();
      } catch (err) {
        /* the list is refreshed again later; the transport reports connection trouble */
      }
    },

    renderList() {
      const items = this.list.map((s) => {
        const state = s.state === "waiting" ? "needs you" : s.state === "running" ? "running" : "";
        const btn = el("button", {className: "session-item", attrs: {type: "button",
          "aria-current": s.id === this.currentId ? "true" : undefined}}, [
          el("span", {className: "session-name", text: s.title || `${s.agent} session`}),
          el("span", {className: "session-sub", text: `${s.agent} · ${relativeTime(s.created_at)}`}),
        ]);
        if (state) btn.append(el("span", {className: `badge badge-${s.state}`, text: state}));
        btn.addEventListener("click", () => this.open(s.id));
        return el("li", {}, [btn]);
      });
      this.listNode.replaceChildren(...items);
      $("session-list-empty").hidden = items.length > 0;
    },

    open(id) {
      Drawer.close();
      if (this.fromHash() === id) this.show(id);
      else location.hash = `s=${encodeURIComponent(id)}`;
    },

    async create() {
      const agent = this.select.value || undefined;
      const button = $("new-session-btn");
      button.disabled = true;
      try {
        const session = await Api.create(agent);
        this.list.unshift(session);
        this.open(session.id);
        $("prompt").focus();
      } catch (err) {
        Composer.showError(`Could not start a session: ${err.message}`);
      } finally {
        button.disabled = false;
      }
    },

    /** Show a session: clear, then replay it from id 0 and follow it live. */
    show(id) {
      if (id === this.currentId) return;
      Transport.stop();
      this.currentId = id;
      Transcript.clear();
      Composer.showError("");
      const has = Boolean(id);
      $("empty-state").hidden = has;
      $("transcript").hidden = !has;
      $("dock").hidden = !has;
      $("session-meta").textContent = "";
      this.current = this.list.find((s) => s.id === id) || null;
      this.renderHeader();
      this.renderList();
      if (!has) return Status.set("idle");
      Transport.start(id, {
        cursor: () => Transcript.lastId,
        onEvent: (event) => Transcript.apply(event),
        onReset: () => Transcript.clear(),
        onGone: () => this.showGone(),
      });
      Api.session(id).then((s) => {
        if (this.currentId !== id) return;
        this.current = s;
        this.renderHeader();
      }).catch((err) => {
        if (err instanceof ApiError && err.status === 404 && this.currentId === id) Transport.gone();
      });
    },

    renderHeader() {
      const s = this.current;
      $("session-title").textContent = s ? s.title || `${s.agent} session` : this.currentId ? "Loading…" : "Tether";
      $("presets").hidden = !(s && s.agent === "local");
      document.title = s ? `${s.title || s.agent} · Tether` : "Tether";
    },

    showGone() {
      $("session-title").textContent = "Session not found";
      $("session-meta").textContent = "";
      $("dock").hidden = true;
      Transcript.root.replaceChildren(el("li", {className: "item notice notice-warn",
        text: "This session no longer exists (it was deleted, or the server restarted without a durable store)."}));
      this.list = this.list.filter((s) => s.id !== this.currentId);
      this.renderList();
    },

    /** Keep the list's state badge of the shown session current without refetching. */
    noteEvent(event) {
      const s = this.list.find((x) => x.id === event.session_id);
      if (!s) return;
      const before = s.state;
      if (event.kind === "user") s.state = "running";
      else if (event.kind === "approval_request" || event.kind === "clarify_request") s.state = "waiting";
      else if (event.kind.endsWith("_resolved")) s.state = "running";
      else if (event.kind === "turn_end") s.state = "idle";
      if (s.state !== before) this.renderList();
    },
  };

  // ------------------------------------------------------------------ start

  function start() {
    Composer.init();
    Drawer.init();
    Transcript.scroller.addEventListener("scroll", () => Transcript.onScroll(), {passive: true});
    window.addEventListener("online", () => Transport.nudge());
    window.addEventListener("offline", () => Transport.offline());
    document.addEventListener("visibilitychange", () => { if (!document.hidden) Transport.nudge(); });
    setInterval(() => Transport.watchdog(), 5000);
    Sessions.init();
  }

  start();
})();
