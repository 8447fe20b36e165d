/* Tether browser UI, part 3 of 5: the transcript.
 *
 *   Markdown    assistant text through marked, then DOMPurify (both vendored in static/vendor)
 *   Transcript  renders events in id order, each exactly once (the Feeder guarantees order)
 *   Tools       tool calls by kind: Bash (command and output), Edit/Write (a diff), Read (a
 *               file name), anything else as JSON; long outputs folded
 *   Cards       approval and clarify cards: pending, sent, settled (by whom / timed out)
 */
"use strict";

const FOLD_LINES = 12;
const FOLD_CHARS = 1200; // a few very long lines fold too
const lineCount = (text) => (text.match(/\n/g) || []).length + 1;

/** A <pre>, wrapped in a closed <details> past FOLD_LINES lines, or FOLD_CHARS when the
 *  text wraps (inputs wrap; command output keeps its columns and scrolls sideways). */
function foldable(text, label, className, wraps = true, alwaysFold = false) {
  const pre = el("pre", {className, text});
  const lines = lineCount(text);
  if (!alwaysFold && lines <= FOLD_LINES && (!wraps || text.length <= FOLD_CHARS)) return pre;
  return el("details", {className: "fold"}, [el("summary", {text: `${label} · ${lines} line${lines === 1 ? "" : "s"}`}), pre]);
}

/** Copy text to the clipboard; says so on the button. */
async function copyText(button, text) {
  const label = button.textContent;
  try {
    if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
    else {
      const area = el("textarea", {attrs: {"aria-hidden": "true", readonly: ""}});
      area.value = text;
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    button.textContent = "Copied";
  } catch (err) {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = label; }, 1500);
}

/** A copy button for every code block under `root`. */
function addCopyButtons(root) {
  for (const pre of root.querySelectorAll("pre")) {
    if (pre.parentElement && pre.parentElement.classList.contains("code-wrap")) continue;
    const button = el("button", {className: "copy-btn", text: "Copy",
      attrs: {type: "button", "aria-label": "Copy code"}});
    button.addEventListener("click", () => copyText(button, pre.textContent.replace(/\n$/, "")));
    const wrap = el("div", {className: "code-wrap"});
    pre.replaceWith(wrap);
    wrap.append(pre, button);
  }
}

// ------------------------------------------------------------------ Markdown

const HTML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);

const Markdown = {
  ready: null,
  init() {
    this.ready = typeof window.marked === "object" && typeof window.DOMPurify === "function"
      && DOMPurify.isSupported;
    if (!this.ready) return;
    marked.use(this.textOnly);
    // Links open elsewhere and leak nothing; images are dropped (no remote fetches from
    // untrusted text), and so is anything DOMPurify does not consider plain content.
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        const href = node.getAttribute("href") || "";
        if (!/^(https?:|mailto:|#)/i.test(href)) node.removeAttribute("href");
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer nofollow");
      }
    });
  },

  /** marked (v18) options: an agent's raw HTML is text. A coding agent's prose is full of
   *  `List<String>`, `make <target>`, `<Foo />` and tag names; as Markdown they are raw HTML,
   *  which the sanitizer would drop without a trace ("make " for `make <target>`: a wrong
   *  instruction). So no html token is ever made (block or inline): the characters stay text,
   *  escaped by the text renderer. Entity references (`&amp;`, `&#60;`) stay as written too,
   *  for the same reason. Autolinks `<https://…>` (and `<user@host>`) still link; `<std::x>`
   *  and other non-web schemes are text. Code spans and blocks are marked's own, untouched.
   *  DOMPurify still runs after this (defense in depth). */
  textOnly: {
    tokenizer: {
      html() { return undefined; }, // block HTML: the lines become a paragraph
      tag() { return undefined; }, // inline HTML: the characters become text
      autolink(src) {
        const scheme = /^<([a-zA-Z][a-zA-Z0-9+.-]{1,31}):/.exec(src);
        return scheme && !/^(https?|ftp|mailto)$/i.test(scheme[1]) ? undefined : false;
      },
      inlineText(src) {
        // marked's own decodes numeric references (`&#60;` becomes `<`); keep the source.
        const cap = this.rules.inline.text.exec(src);
        return cap ? {type: "text", raw: cap[0], text: cap[0], escaped: false} : undefined;
      },
    },
    renderer: {
      text(token) {
        // A token with children (a tight list item) renders them; plain text is escaped
        // whole, `&` included (marked leaves `&amp;` alone, so it would show as `&`).
        if (token.tokens) return false;
        return escapeHtml(token.text);
      },
    },
  },

  /** Render untrusted Markdown into `container` (safe: sanitized DOM, never raw HTML). */
  render(container, text) {
    container.replaceChildren();
    if (!this.ready) return this.plain(container, text);
    let fragment;
    try {
      const html = marked.parse(text, {gfm: true, breaks: false, async: false});
      fragment = DOMPurify.sanitize(html, {RETURN_DOM_FRAGMENT: true,
        FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "video", "audio", "svg", "math"],
        FORBID_ATTR: ["style", "class", "id"]});
    } catch (err) {
      console.error("tether: markdown", err);
      return this.plain(container, text);
    }
    container.append(fragment);
    container.classList.add("md");
    addCopyButtons(container);
  },

  plain(container, text) {
    container.append(document.createTextNode(text));
  },
};

// ------------------------------------------------------------------ line diff

/** A line diff: [["=", line] | ["-", line] | ["+", line]], LCS up to a size, else a
 *  plain "all removed, all added". */
function lineDiff(before, after) {
  const a = before === "" ? [] : before.split("\n");
  const b = after === "" ? [] : after.split("\n");
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length, endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
  const head = a.slice(0, start).map((l) => ["=", l]);
  const tail = a.slice(endA).map((l) => ["=", l]);
  const x = a.slice(start, endA), y = b.slice(start, endB);
  let middle;
  if (x.length * y.length > 250000) {
    middle = [...x.map((l) => ["-", l]), ...y.map((l) => ["+", l])];
  } else {
    const n = x.length, m = y.length;
    const dp = Array.from({length: n + 1}, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
      }
    }
    middle = [];
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { middle.push(["=", x[i]]); i++; j++; }
      else if (dp[i + 1][j] >= dp[i][j + 1]) middle.push(["-", x[i++]]);
      else middle.push(["+", y[j++]]);
    }
    while (i < n) middle.push(["-", x[i++]]);
    while (j < m) middle.push(["+", y[j++]]);
  }
  // Keep 3 lines of context around the changes.
  const all = [...head, ...middle, ...tail];
  const keep = all.map(() => false);
  all.forEach(([op], k) => {
    if (op !== "=") for (let d = -3; d <= 3; d++) if (all[k + d]) keep[k + d] = true;
  });
  const out = [];
  let skipped = 0;
  all.forEach((line, k) => {
    if (keep[k]) {
      if (skipped) out.push(["…", `${skipped} unchanged line${skipped === 1 ? "" : "s"}`]);
      skipped = 0;
      out.push(line);
    } else skipped++;
  });
  if (skipped && out.length) out.push(["…", `${skipped} unchanged line${skipped === 1 ? "" : "s"}`]);
  return out;
}

/** Where an approval's command runs, in few words: the session's own folder (where its agent
 *  started), a folder under it, or elsewhere (the whole path). */
function relativePath(path) {
  const root = (Transcript.agentCwd || "").replace(/\/$/, "");
  return root && path.startsWith(root + "/") ? path.slice(root.length + 1) : path;
}

function cwdLabel(cwd) {
  const root = Transcript.agentCwd;
  if (root && cwd === root) return "in the session's folder";
  if (root && cwd.startsWith(root.replace(/\/$/, "") + "/")) return `in ./${cwd.slice(root.replace(/\/$/, "").length + 1)}`;
  return `in ${cwd}`;
}

function diffView(before, after, label) {
  const rows = lineDiff(before || "", after || "");
  const pre = el("pre", {className: "diff", attrs: {"aria-label": label}});
  const names = {"+": "diff-add", "-": "diff-del", "=": "diff-ctx", "…": "diff-skip"};
  const marks = {"+": "+ ", "-": "- ", "=": "  ", "…": "⋯ "};
  for (const [op, line] of rows) pre.append(el("span", {className: names[op], text: `${marks[op]}${line}\n`}));
  const adds = rows.filter(([op]) => op === "+").length;
  const dels = rows.filter(([op]) => op === "-").length;
  if (rows.length <= FOLD_LINES * 2) return pre;
  return el("details", {className: "fold"}, [el("summary", {text: `Diff · +${adds} −${dels}`}), pre]);
}

/** A unified diff (an ACP agent's file change, as the server renders it) with its lines
 *  coloured: file and hunk headers muted, additions and removals marked. */
function unifiedDiffView(text, label, className = "") {
  const pre = el("pre", {className: `diff${className ? ` ${className}` : ""}`, attrs: {"aria-label": label}});
  const lines = String(text).replace(/\n$/, "").split("\n");
  for (const line of lines) {
    const kind = /^(--- |\+\+\+ |@@|\\)/.test(line) ? "diff-skip"
      : line.startsWith("+") ? "diff-add" : line.startsWith("-") ? "diff-del" : "diff-ctx";
    pre.append(el("span", {className: kind, text: `${line}\n`}));
  }
  if (lines.length <= FOLD_LINES * 2) return pre;
  const adds = lines.filter((l) => l.startsWith("+") && !l.startsWith("+++ ")).length;
  const dels = lines.filter((l) => l.startsWith("-") && !l.startsWith("--- ")).length;
  return el("details", {className: "fold"}, [el("summary", {text: `${label} · +${adds} −${dels}`}), pre]);
}

/** Whether a tool result's text is a unified diff (an ACP agent's finished file change). */
const isUnifiedDiff = (text) => /^--- \S.*\n\+\+\+ \S/.test(text);

/** An Agent Client Protocol tool call's input (tether/agents/acp_content.py tool_input):
 *  its title says what it does, its kind what sort of call it is. */
const isAcpCall = (input) => !!input && typeof input === "object" && typeof input.title === "string" && "kind" in input
  && Array.isArray(input.locations);

// ------------------------------------------------------------------ Transcript

const Transcript = {
  root: null,
  scroller: null,
  lastId: 0,
  streaming: null,
  tools: new Map(),
  cards: new Map(),
  toolCards: new Map(), // tool_use_id -> its approval or question card
  turnActive: false,
  turnStarted: null,
  lastState: "idle", // idle | running | waiting | stopped
  pinned: true,
  agentCwd: "", // the agent's working folder (its agent_session event)

  init() {
    this.root = $("transcript");
    this.scroller = $("transcript-wrap");
    this.scroller.addEventListener("scroll", () => this.onScroll(), {passive: true});
  },

  clear() {
    this.root.replaceChildren();
    this.root.dataset.lastEventId = "0";
    Object.assign(this, {lastId: 0, streaming: null, turnActive: false, turnStarted: null,
      lastState: "idle", pinned: true, inHistory: false, agentCwd: ""});
    this.tools.clear();
    this.cards.clear();
    Queue.reset();
    Slash.reset();
    this.toolCards.clear();
    Composer.update();
  },

  /** True until the session's first prompt: the intro says what the agent can do. */
  get untouched() {
    return !this.root.querySelector(".msg-user");
  },

  /** Apply one event; the Feeder hands them over in order, exactly once. */
  apply(event) {
    if (typeof event.id !== "number" || event.id <= this.lastId) return;
    this.lastId = event.id;
    this.root.dataset.lastEventId = String(event.id);
    const render = this.renderers[event.kind];
    try {
      // A continued conversation's history ends where this session's own events begin.
      if (this.inHistory && render && !["history", "agent_session", "commands"].includes(event.kind)) {
        this.inHistory = false;
        this.add(el("li", {className: "item history-rule history-end", text: "Continued here"}), event);
      }
      if (render) render.call(this, event);
    } catch (err) {
      console.error("tether: cannot render event", event, err);
    }
    Sessions.noteEvent(event);
    if (event.kind === "user") Intro.update();
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

  /** Scroll a card into view and focus its first control (the inbox jumps here). */
  reveal(requestId) {
    const card = this.cards.get(requestId);
    if (!card) return false;
    card.scrollIntoView({block: "center", behavior: "smooth"});
    const target = card.querySelector(".btn-allow:not(:disabled), .btn-option:not(:disabled), button:not(:disabled)") || card;
    if (target === card) card.setAttribute("tabindex", "-1");
    target.focus({preventScroll: true});
    card.classList.add("flash");
    setTimeout(() => card.classList.remove("flash"), 1600);
    return true;
  },

  renderers: {
    user(event) {
      this.endStreaming();
      this.turnActive = true;
      this.turnStarted = typeof event.ts === "number" ? event.ts * 1000 : Date.now();
      this.lastState = "running";
      const bubble = el("div", {className: "bubble", text: event.text});
      const images = Array.isArray(event.images) ? event.images : [];
      if (images.length) {
        bubble.prepend(el("div", {className: "bubble-images"}, images.map((image, n) => {
          const url = Api.imageUrl(event.session_id, String(image.sha256));
          const img = el("img", {attrs: {src: url, alt: `Image ${n + 1} of the message`}});
          // It grows the transcript once loaded: a reader at the bottom stays there.
          img.addEventListener("load", () => this.stickToBottom());
          return el("a", {attrs: {href: url, target: "_blank", rel: "noopener"}}, [img]);
        })));
      }
      this.add(el("li", {className: "item msg msg-user"}, [bubble]), event);
    },
    history(event) {
      // Read-only: the earlier exchange of a conversation this session continues
      // (docs/protocol.md, "Conversations started elsewhere"), marked apart from this
      // session's own messages.
      this.endStreaming();
      if (!this.inHistory) {
        this.inHistory = true;
        this.add(el("li", {className: "item history-rule", text: "Earlier in this conversation"}), event);
      }
      if (event.truncated) {
        const n = Number(event.omitted) || 0;
        this.add(el("li", {className: "item history-note",
          text: n ? `${n} earlier ${n === 1 ? "entry is" : "entries are"} not shown` : "Earlier entries are not shown"}), event);
      }
      const when = typeof event.at === "number" ? new Date(event.at * 1000).toLocaleString() : "";
      const label = `Earlier, ${event.role === "user" ? "you" : "the agent"}${when ? `, ${when}` : ""}`;
      if (event.tool && typeof event.tool === "object") {
        this.add(el("li", {className: "item tool history", attrs: {title: label}}, [
          el("div", {className: "tool-head"}, [
            el("span", {className: "tool-name", text: String(event.tool.name || "tool")}),
            el("span", {className: "tool-summary", text: String(event.tool.summary || "")}),
          ])]), event);
        return;
      }
      if (!event.text) return;
      const bubble = el("div", {className: "bubble"});
      if (event.role === "user") bubble.textContent = event.text;
      else Markdown.render(bubble, event.text);
      if (event.clipped) bubble.append(el("span", {className: "history-clipped", text: " (cut short)"}));
      this.add(el("li", {className: `item msg ${event.role === "user" ? "msg-user" : "msg-agent"} history`,
        attrs: {title: label}}, [bubble]), event);
    },
    agent_session(event) {
      // Where the agent works: approvals say "in the session's folder" for it (cwdLabel).
      if (typeof event.cwd === "string" && event.cwd) this.agentCwd = event.cwd;
      // On a phone only the model shows (the agent is in the session list): one short line.
      const model = event.model && event.model !== event.agent ? event.model : "";
      $("meta-agent").textContent = model ? `${event.agent} agent · ` : `${event.agent} agent`;
      $("meta-model").textContent = model;
      $("session-meta").title = `${event.agent} agent${model ? ` · ${model}` : ""}`;
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
      // A slash command's output (/cost, /context) is laid out in columns: kept as sent.
      if (event.command_output) {
        item.classList.add("command-output");
        item.firstChild.replaceChildren(el("pre", {className: "command-output-text", text: event.text || ""}));
      } else Markdown.render(item.firstChild, event.text || "");
      this.endStreaming();
    },
    thinking(event) {
      this.endStreaming();
      const box = el("details", {className: "thinking"}, [el("summary", {text: "Thinking"}),
        el("p", {text: event.text})]);
      this.add(el("li", {className: "item"}, [box]), event);
    },
    plan(event) {
      // The agent's plan (ACP `plan`): each update is the whole list, so the newest one
      // replaces the plan shown since the last prompt.
      this.endStreaming();
      const entries = Array.isArray(event.entries) ? event.entries : [];
      const done = entries.filter((e) => e && e.status === "completed").length;
      const list = el("ol", {className: "plan-entries"}, entries.map((e) => el("li", {
        className: `plan-entry plan-${["pending", "in_progress", "completed"].includes(e && e.status) ? e.status : "pending"}`,
        text: String((e && e.content) || "")})));
      const item = el("li", {className: "item plan", attrs: {role: "group", "aria-label": "The agent's plan"}}, [
        el("p", {className: "plan-head", text: `Plan · ${done} of ${entries.length} done`}), list]);
      const shown = [...this.root.querySelectorAll(".item.plan")].pop();
      const latestUser = [...this.root.querySelectorAll(".msg-user")].pop();
      if (shown && (!latestUser || latestUser.compareDocumentPosition(shown) & Node.DOCUMENT_POSITION_FOLLOWING)) {
        item.dataset.eventId = String(event.id);
        item.dataset.kind = event.kind;
        shown.replaceWith(item);
      } else this.add(item, event);
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
      this.lastState = "waiting";
      Cards.place(Cards.approval(event), event);
    },
    approval_resolved(event) {
      Cards.resolved(event);
      if (this.turnActive) this.lastState = "running";
    },
    clarify_request(event) {
      this.endStreaming();
      this.lastState = "waiting";
      Cards.place(Cards.clarify(event), event);
    },
    clarify_resolved(event) {
      Cards.resolved(event);
      if (this.turnActive) this.lastState = "running";
    },
    result(event) {
      this.endStreaming();
      // The agent's answer to a person's Stop: the turn_end line says it ("Stopped by you").
      if (event.stopped) return;
      const parts = [];
      if (typeof event.duration_ms === "number") parts.push(`${(event.duration_ms / 1000).toFixed(1)} s`);
      // The turn's own cost and the session's sum; none at all for an agent that reports no
      // cost (the local agent has no model). Before session_cost_usd existed, cost_usd was
      // Claude Code's running total: said so, not passed off as the turn's.
      const usd = (n) => `$${n === 0 ? "0" : n.toFixed(n < 1 ? 4 : 2)}`;
      if (typeof event.cost_usd === "number" && typeof event.session_cost_usd === "number") {
        parts.push(`${usd(event.cost_usd)} this turn`, `${usd(event.session_cost_usd)} session`);
      } else if (typeof event.cost_usd === "number" && event.cost_usd > 0) {
        parts.push(`${usd(event.cost_usd)} agent's running total`);
      }
      const usage = event.usage || {};
      const fmt = (n) => Number(n).toLocaleString("en-US");
      const tokens = [];
      if (typeof usage.input_tokens === "number") tokens.push(`${fmt(usage.input_tokens)} in`);
      if (typeof usage.output_tokens === "number") tokens.push(`${fmt(usage.output_tokens)} out`);
      const cached = usage.cache_read_input_tokens;
      if (typeof cached === "number" && cached > 0) tokens.push(`${fmt(cached)} cached`);
      if (tokens.length) parts.push(`${tokens.join(" / ")} tokens`);
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
      this.turnStarted = null;
      // A person's Stop leaves the session idle; "stopped" is for an agent that died or ran out of time.
      this.lastState = ["completed", "cancelled"].includes(event.reason) ? "idle" : "stopped";
      const labels = {timeout: "Timed out", error: "Ended by an error",
        interrupted: "Interrupted: the server restarted"};
      if (event.reason === "cancelled") this.notice(event, "Stopped by you", "neutral");
      else if (labels[event.reason]) this.notice(event, labels[event.reason], "warn");
      else this.add(el("li", {className: "item turn-rule", attrs: {"aria-hidden": "true"}}), event);
    },
    prompt_queued(event) {
      Queue.apply(event);
    },
    commands(event) {
      Slash.set(event.commands);
      // Remembered for this agent's next new session, whose own agent has not run yet.
      const agent = Sessions.current && (Sessions.agents || []).find((a) => a.name === Sessions.current.agent);
      if (agent) agent.commands = event.commands;
    },
    context_cleared(event) {
      this.endStreaming();
      this.notice(event, "Context cleared: the agent starts afresh", "neutral");
    },
    mode(event) {
      // A change of permission mode, made by a person (any client) or by the agent itself.
      const label = Modes.label(event.permission_mode);
      const by = event.by === "agent" ? "the agent" : event.by === Client.label ? "you" : event.by;
      this.notice(event, `Permission mode: ${label}${by ? ` · changed by ${by}` : ""}`, "neutral");
      Modes.applyEvent(event, {permission_mode: event.permission_mode});
    },
    model(event) {
      const by = event.by === Client.label ? "you" : event.by;
      this.notice(event, `Model: ${Modes.modelName(event.model)}${by ? ` · changed by ${by}` : ""}`, "neutral");
      Modes.applyEvent(event, {model: event.model});
    },
    prompt_dequeued(event) {
      Queue.apply(event);
    },
  },
};

// ------------------------------------------------------------------ Tools

const Tools = {
  summary(name, input) {
    if (!input || typeof input !== "object" || name === "AskUserQuestion") return "";
    if (name === "apply_patch" && Array.isArray(input.changes)) {
      return input.changes.filter((c) => c && typeof c.path === "string")
        .map((c) => `${c.kind === "add" ? "new " : c.kind === "delete" ? "delete " : ""}${relativePath(c.path)}`).join(", ");
    }
    // An ACP call: its title, unless it is the command shown below (Gemini CLI's shell calls).
    if (isAcpCall(input)) return input.kind === "execute" ? "" : input.title;
    return input.description || input.file_path || input.notebook_path || input.path || input.pattern || input.url || "";
  },

  /** What a tool call looks like, by kind. */
  body(name, input) {
    if (name === "Bash" && typeof input.command === "string") {
      return [foldable(`$ ${input.command}`, "Command", "tool-input")];
    }
    if ((name === "Edit" || name === "MultiEdit") && typeof input.file_path === "string") {
      const edits = name === "MultiEdit" && Array.isArray(input.edits) ? input.edits : [input];
      return edits.map((e) => diffView(String(e.old_string ?? ""), String(e.new_string ?? ""), `Changes to ${input.file_path}`));
    }
    if (name === "Write" && typeof input.file_path === "string") {
      return [diffView("", String(input.content ?? ""), `New content of ${input.file_path}`)];
    }
    if (name === "Read" && typeof input.file_path === "string") {
      const range = input.offset || input.limit ? ` (lines ${input.offset || 1}${input.limit ? `–${(input.offset || 1) + input.limit - 1}` : "+"})` : "";
      return [el("p", {className: "tool-file", text: `${input.file_path}${range}`})];
    }
    if (name === "apply_patch" && Array.isArray(input.changes)) {
      // A Codex file change: per file, its whole new (or old) content, or its hunks.
      return input.changes.filter((c) => c && typeof c.path === "string").map((c) => {
        const path = relativePath(c.path);
        const text = String(c.diff ?? "");
        if (c.kind === "add") return diffView("", text.replace(/\n$/, ""), `New file ${path}`);
        if (c.kind === "delete") return diffView(text.replace(/\n$/, ""), "", `Deleted file ${path}`);
        return unifiedDiffView(text, `Changes to ${path}`);
      });
    }
    if (name === "AskUserQuestion") return [];
    // An ACP call: a shell call's title is its command; the agent's own input, if it sent
    // any, is there folded (its title above already says what the call does).
    if (isAcpCall(input)) {
      const parts = input.kind === "execute" && input.title ? [foldable(`$ ${input.title}`, "Command", "tool-input")] : [];
      if (input.rawInput !== undefined) {
        parts.push(foldable(JSON.stringify(input.rawInput, null, 2), "Input", "tool-input", true, true));
      }
      return parts;
    }
    // Plan mode's plan: its approval card shows it, rendered (Cards.approval).
    if (name === "ExitPlanMode") return [];
    return [foldable(JSON.stringify(input, null, 2), "Input", "tool-input")];
  },

  block(event) {
    const input = event.input || {};
    const name = event.name || "tool";
    const summary = name === "Read" ? "" : this.summary(name, input);
    const head = el("div", {className: "tool-head"}, [
      el("span", {className: "tool-name", text: name === "AskUserQuestion" ? "Question" : name === "ExitPlanMode" ? "Plan" : name}),
      el("span", {className: "tool-summary", text: summary}),
    ]);
    const box = el("li", {className: `item tool tool-${name.toLowerCase().replace(/[^a-z0-9]/g, "")}`,
      attrs: {"data-tool-use-id": event.tool_use_id, "data-tool-name": name}}, [head]);
    box.append(...this.body(name, input));
    Transcript.tools.set(event.tool_use_id, box);
    return box;
  },

  result(event) {
    const text = stringify(event.content) || "(no output)";
    // Claude Code's (and the local agent's) answer to Stop: not a failure of the tool.
    const stopped = event.is_error && /^\[Request interrupted by user/.test(text);
    if (stopped) event = {...event, is_error: false};
    const box = Transcript.tools.get(event.tool_use_id);
    const card = Transcript.toolCards.get(event.tool_use_id);
    // A denied call's error is the denial the card shows; an answered question's result is
    // the answer the card shows: the card's outcome stands for it (shown once, not twice).
    if (card && Cards.saysAlready(card, event)) {
      const outcome = card.querySelector(".card-outcome");
      outcome.dataset.eventId = String(event.id);
      outcome.dataset.kind = event.kind;
      return;
    }
    // No card: nobody was asked. Claude Code says who decided (tool_result_meta): its own
    // rules (`config`: its settings' allow rules, its permission mode) or a hook.
    const permission = event.permission || {};
    const decidedBy = {config: "the agent's rules", hook: "a hook"}[permission.source];
    if (box && !card && decidedBy) {
      const verb = permission.decision === "reject" ? "Denied" : "Allowed";
      box.querySelector(".tool-head").append(el("span", {className: "tool-rule",
        text: `${verb} by ${decidedBy}`}));
      box.dataset.decidedBy = permission.source;
    }
    const name = box ? box.dataset.toolName : "";
    // Shell output keeps its columns (scrolls sideways, like a terminal); other results wrap.
    const terminal = name === "Bash" && !event.is_error;
    // A file's contents, or an edit's confirmation, are folded away: the call says it all.
    const quiet = !event.is_error && ["Read", "Edit", "MultiEdit", "Write", "apply_patch"].includes(name);
    // An ACP file change's result is its diff: coloured, and folded when its approval card
    // showed that diff already.
    const diff = !event.is_error && isUnifiedDiff(text);
    const shown = diff && card && card.querySelector(".card-diff");
    const out = stopped ? el("div", {className: "tool-output is-stopped", text: "Stopped before it finished"})
      : el("div", {className: `tool-output${event.is_error ? " is-error" : ""}`},
        [diff ? (shown ? el("details", {className: "fold"}, [el("summary", {text: "Changes made (as approved above)"}),
          unifiedDiffView(text, "Changes made")]) : unifiedDiffView(text, "Changes made"))
          : foldable(text, event.is_error ? "Error output" : "Output",
            `tool-output-text${terminal ? " terminal" : ""}`, !terminal, quiet)]);
    out.dataset.eventId = String(event.id);
    out.dataset.kind = event.kind;
    if (box) box.append(out);
    else Transcript.root.append(el("li", {className: "item tool"}, [out]));
  },
};

// ------------------------------------------------------------------ Cards

/** What Tether tells the agent for a denial without a message (tether/agents/claude.py). */
const DEFAULT_DENIAL = "The user denied this from Tether.";
/** A declined Codex item's whole result (tether/agents/codex_items.py, DECLINED). */
const CODEX_DECLINED = "declined by the user";

const Cards = {
  /** Cards sit inside their tool call's block when there is one, else on their own. */
  place(card, event) {
    card.dataset.eventId = String(event.id);
    card.dataset.kind = event.kind;
    Transcript.cards.set(event.request_id, card);
    if (event.tool_use_id) Transcript.toolCards.set(event.tool_use_id, card);
    const box = event.tool_use_id && Transcript.tools.get(event.tool_use_id);
    if (box) box.append(card);
    else Transcript.root.append(el("li", {className: "item"}, [card]));
  },

  shell(event, kicker, title) {
    return el("div", {className: "card", attrs: {"data-request-id": event.request_id, "data-state": "pending",
      role: "group", "aria-label": `${kicker}: ${title}`}},
      [el("div", {className: "card-head"}, [el("span", {className: "card-kicker", text: kicker}),
        el("p", {className: "card-title", text: title})])]);
  },

  /** Plan mode's plan (Claude Code's ExitPlanMode): the plan as Markdown, "Approve plan"
   *  (allow: the agent leaves Plan mode and works) or "Keep planning" (deny, with what to
   *  change). */
  plan(event) {
    const sid = event.session_id || Sessions.currentId;
    const card = this.shell(event, "Plan ready", "Approve this plan?");
    card.classList.add("card-approval", "card-plan");
    const text = typeof event.plan === "string" ? event.plan
      : event.input && typeof event.input.plan === "string" ? event.input.plan : "";
    const body = el("div", {className: "plan-body"});
    Markdown.render(body, text || "(The agent sent no plan text.)");
    const message = el("input", {className: "card-message", attrs: {type: "text", maxlength: "2000",
      placeholder: "What should change? (optional)", "aria-label": "What should change in the plan"}});
    const send = (body) => this.submit(card, () => Api.approve(sid, event.request_id, body));
    const approve = el("button", {className: "btn btn-allow", text: "Approve plan", attrs: {type: "button"}});
    approve.addEventListener("click", () => send({decision: "allow"}));
    const keep = el("button", {className: "btn btn-deny", text: "Keep planning", attrs: {type: "button"}});
    keep.addEventListener("click", () => send({decision: "deny",
      message: message.value.trim() || "Keep planning: the plan is not approved yet."}));
    card.append(body, el("div", {className: "card-actions"}, [message, el("div", {className: "btn-row"}, [approve, keep])]),
      el("p", {className: "card-outcome", attrs: {role: "status"}}));
    return card;
  },

  approval(event) {
    if (event.tool_name === "ExitPlanMode") return this.plan(event);
    const sid = event.session_id || Sessions.currentId;
    const nested = event.tool_use_id && Transcript.tools.has(event.tool_use_id);
    const name = event.tool_name || "tool";
    // An ACP call's title is the agent's own phrase ("Writing to notes.txt", a command):
    // shown as it is, not made into a question.
    const card = this.shell(event, "Needs your approval", isAcpCall(event.input) ? name : `Allow ${name}?`);
    card.classList.add("card-approval");
    if (event.description && !nested) card.append(el("p", {className: "card-desc", text: event.description}));
    // The agent's reason for asking (Codex's), where it ran (its cwd), and the change it
    // wants to make as a diff (a Codex file change, an ACP tool call's diff content).
    if (typeof event.reason === "string" && event.reason) card.append(el("p", {className: "card-desc", text: event.reason}));
    if (typeof event.cwd === "string" && event.cwd) card.append(el("p", {className: "card-cwd", text: cwdLabel(event.cwd), attrs: {title: event.cwd}}));
    // Nested in its tool call's block, a Codex change is shown right above the card (Tools.body).
    const changes = name === "apply_patch" && event.input && Array.isArray(event.input.changes);
    if (typeof event.diff === "string" && event.diff && !(nested && changes)) {
      card.append(unifiedDiffView(event.diff, "The change", "card-diff"));
    }
    const input = event.input || {};
    const isBash = name === "Bash" && typeof input.command === "string";
    // Nested in its tool call's block, the input is shown right above the card.
    if (!nested) card.append(...(isBash ? [foldable(`$ ${input.command}`, "Input", "card-input")] : Tools.body(name, input)));
    // The agent's own choices, in its words (Codex's decisions, an ACP agent's permission
    // options: allow_once / allow_always / reject_once / reject_always), when it sent them.
    // Such an agent takes the option alone: no message, no edited command (the server
    // refuses an edited input: the agent would run the original one).
    const offered = (Array.isArray(event.options) ? event.options : [])
      .filter((o) => o && typeof o.option_id === "string");
    const message = offered.length ? null : el("input", {className: "card-message", attrs: {type: "text", maxlength: "2000",
      placeholder: "Message for the agent (optional)", "aria-label": `Message with your answer to ${name}`}});
    const send = (body) => this.submit(card, () => Api.approve(sid, event.request_id,
      {...body, message: (message && message.value.trim()) || undefined}));
    const button = (text, className, onClick, label) => {
      const b = el("button", {className: `btn ${className}`, text, attrs: {type: "button", "aria-label": label}});
      b.addEventListener("click", onClick);
      return b;
    };
    const row = el("div", {className: "btn-row"}, offered.length ? offered.map((o) => {
      const kind = String(o.kind || "");
      const deny = kind.startsWith("reject");
      const b = button(o.label || o.option_id, deny ? "btn-deny" : kind === "allow_always" ? "btn-allow-session" : "btn-allow",
        () => send({decision: deny ? "deny" : "allow", option_id: o.option_id}));
      b.dataset.optionId = o.option_id;
      b.dataset.optionKind = kind;
      return b;
    }) : [
      button("Allow", "btn-allow", () => send({decision: "allow"})),
      button("Deny", "btn-deny", () => send({decision: "deny"})),
    ]);
    // "Allow for this session": the agent's suggested allow rules (Claude Code's
    // permission_suggestions, type addRules), kept for the agent's session only. Claude Code
    // suggests destination "localSettings" (a file in the workspace, for good) and other
    // updates (setMode acceptEdits, addDirectories) that reach further than this button says.
    const suggestions = (Array.isArray(event.permission_suggestions) ? event.permission_suggestions : [])
      .filter((s) => s && s.type === "addRules")
      .map((s) => ({...s, destination: "session"}));
    if (suggestions.length && !offered.length) {
      row.append(button("Allow for this session", "btn-allow-session",
        () => send({decision: "allow", updated_permissions: suggestions})));
    }
    const actions = el("div", {className: "card-actions"}, message ? [message, row] : [row]);
    if (isBash && !offered.length) {
      // Edit-then-allow: the command, editable; allowed with `updated_input`.
      const editor = el("div", {className: "card-editor", attrs: {hidden: ""}});
      const areaId = `edit-${event.request_id}`;
      const area = el("textarea", {className: "card-edit", attrs: {id: areaId, rows: "3", spellcheck: "false",
        autocapitalize: "off", autocomplete: "off"}});
      area.value = input.command;
      const runEdited = button("Allow edited command", "btn-allow", () => {
        const command = area.value.trim();
        if (!command) return this.outcome(card, "The command is empty.");
        send({decision: "allow", updated_input: {...input, command}});
      });
      const cancelEdit = button("Cancel edit", "", () => {
        editor.hidden = true;
        row.hidden = false;
        edit.focus();
      });
      editor.append(el("label", {className: "card-edit-label", text: "Command to run", attrs: {for: areaId}}), area,
        el("div", {className: "btn-row"}, [runEdited, cancelEdit]));
      const edit = button("Edit", "btn-edit", () => {
        editor.hidden = false;
        row.hidden = true;
        area.focus();
      }, "Edit the command, then allow");
      row.append(edit);
      actions.append(editor);
    }
    card.append(actions, el("p", {className: "card-outcome", attrs: {role: "status"}}));
    card.agentOptions = offered; // for the outcome line (Cards.resolved)
    return card;
  },

  clarify(event) {
    const sid = event.session_id || Sessions.currentId;
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
      if (Object.keys(answers).length) this.submit(card, () => Api.clarify(sid, event.request_id, answers));
      else this.outcome(card, "Pick an option or type an answer first.");
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

  /** POST an answer, straight from this tab. A 409 means another client answered first: say
   *  so, never drop the click. */
  async submit(card, call) {
    if (card.dataset.state !== "pending") {
      if (card.dataset.state !== "busy") this.explain(card);
      return;
    }
    this.setBusy(card, true);
    try {
      await call();
      if (card.dataset.state === "busy") this.outcome(card, "Sent…");
    } catch (err) {
      if (card.dataset.state !== "busy") return; // the resolved event already said it all
      if (err instanceof ApiError && err.status === 409) this.finish(card, "elsewhere", "Already answered elsewhere");
      else if (err instanceof ApiError && err.status === 404) this.finish(card, "elsewhere", "No longer waiting for an answer (timed out or cancelled)");
      else {
        this.setBusy(card, false);
        this.outcome(card, `Could not send: ${err.message}`);
      }
    }
  },

  /** A click that reached a settled card: point at why it is settled. */
  explain(card) {
    const outcome = card.querySelector(".card-outcome");
    outcome.classList.remove("flash");
    void outcome.offsetWidth;
    outcome.classList.add("flash");
  },

  setBusy(card, busy) {
    card.dataset.state = busy ? "busy" : "pending";
    card.querySelectorAll("button, input, textarea").forEach((n) => { n.disabled = busy; });
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
    card.querySelectorAll("button, input, textarea").forEach((n) => { n.disabled = true; });
    card.querySelectorAll(".question .card-message").forEach((n) => n.remove());
    this.outcome(card, text);
    Composer.update();
  },

  /** True when a tool_result only repeats what the settled `card` says: the denial's
   *  message (or Tether's default one, or the CLI's interrupt marker), or, for an answered
   *  question, the CLI's "User has answered your questions" text. */
  saysAlready(card, event) {
    const state = card.dataset.state;
    if (state === "answered") return !event.is_error;
    // An approved plan's result is the agent's "User has approved exiting plan mode".
    if (state === "allowed" && card.classList.contains("card-plan")) return !event.is_error;
    if (!["denied", "timeout", "cancelled"].includes(state) || !event.is_error) return false;
    const text = stringify(event.content).trim();
    return text === (card.dataset.message || "").trim() || text === DEFAULT_DENIAL
      || text === CODEX_DECLINED || text.startsWith("[Request interrupted by user");
  },

  resolved(event) {
    const card = Transcript.cards.get(event.request_id);
    if (!card) return;
    card.dataset.message = event.message || "";
    const by = event.by === Client.label ? "you" : event.by || "someone";
    // The agent's own option picked, when it reaches further than this one call (ACP's
    // allow_always / reject_always): its words, so the outcome does not read as a plain allow.
    const option = event.option_id && [...card.querySelectorAll("[data-option-id]")]
      .find((b) => b.dataset.optionId === event.option_id);
    const scope = option && /_always$/.test(option.dataset.optionKind) ? ` (${option.textContent})` : "";
    let state, text;
    if (event.reason === "timeout") [state, text] = ["timeout", event.kind === "clarify_resolved" ? "Timed out: no answer" : "Timed out: denied"];
    else if (event.reason === "cancelled") [state, text] = ["cancelled", "Cancelled"];
    else if (event.reason === "auto") [state, text] = ["allowed", "Allowed by auto-approve"];
    else if (event.kind === "clarify_resolved") {
      const answers = Object.entries(event.answers || {}).map(([q, a]) => `${q} → ${a}`).join("; ");
      [state, text] = ["answered", `Answered by ${by}${answers ? ": " + answers : ""}`];
    } else if (card.classList.contains("card-plan")) {
      [state, text] = event.decision === "allow" ? ["allowed", `Plan approved by ${by}`]
        : ["denied", `Kept planning (${by})${event.message ? ": " + event.message : ""}`];
    } else if (event.decision === "allow") {
      state = "allowed";
      const picked = (card.agentOptions || []).find((o) => o.option_id === event.option_id);
      const session = event.updated_permissions || (picked && picked.kind === "allow_always");
      text = `Allowed${session && !scope ? " for this session" : ""} by ${by}${scope}`;
      const edited = event.updated_input;
      if (edited) text += ` (edited: ${edited.command ?? JSON.stringify(edited)})`;
    }
    else [state, text] = ["denied", `Denied by ${by}${scope}${event.message ? ": " + event.message : ""}`];
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
