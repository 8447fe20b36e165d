/* Tether browser UI, part 5 of 5: composer, sessions, inbox, settings, drawer, start-up. */
"use strict";

// ------------------------------------------------------------------ Composer

/** What a new session's agent can do, shown until its first prompt (the transcript is
 *  empty then, and a blank screen teaches nothing). */
const Intro = {
  LOCAL: [
    ["$ <command>", "runs a shell command in the session's workspace, once you allow it"],
    ["triage · disk · memory · processes", "run a few read-only checks and sum them up"],
    ["ask Deploy now? yes | no", "asks you a question, with its options"],
  ],
  update() {
    const s = Sessions.current;
    const show = Boolean(Sessions.currentId && s && Transcript.untouched);
    $("intro").hidden = !show;
    if (!show || $("intro").dataset.agent === s.agent) return;
    $("intro").dataset.agent = s.agent;
    const lines = s.agent === "local"
      ? Intro.LOCAL.map(([what, does]) => el("li", {}, [el("code", {text: what}), document.createTextNode(` ${does}`)]))
      : [el("li", {text: "Describe a task; the agent works in this session's folder and asks before it runs tools."}),
        el("li", {}, [el("code", {text: "/"}), document.createTextNode(" at the start of a message lists its commands.")])];
    const agent = (Sessions.agents || []).find((a) => a.name === s.agent);
    $("intro").replaceChildren(
      el("p", {className: "intro-lead", text: agent ? agent.description : `The ${s.agent} agent.`}),
      el("ul", {className: "intro-list"}, lines));
  },
};

const Composer = {
  sending: false,
  stopping: false,
  timer: null,

  init() {
    this.form = $("composer");
    this.input = $("prompt");
    this.send = $("send-btn");
    this.stop = $("stop-btn");
    this.error = $("composer-error");
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.submit(this.input.value); });
    Slash.init(this.input);
    this.input.addEventListener("keydown", (e) => {
      if (Slash.onKey(e)) return;
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

  /** Send, or while a turn runs queue it on the server (sent by itself when the turn ends). */
  async submit(raw, preset = false) {
    const text = raw.trim();
    const id = Sessions.currentId;
    if (!text || !id || this.sending) return;
    // A command the agent refuses headless is not sent: say why here, not after a round trip.
    const refused = preset ? null : Slash.refused(text);
    if (refused) {
      Slash.close();
      return this.showError(`/${refused.name} is not sent: ${refused.reason}.`);
    }
    const queue = Transcript.turnActive && !preset;
    if (Transcript.turnActive && preset) return;
    const images = preset ? [] : Attach.payload();
    this.sending = true;
    this.showError("");
    this.update();
    try {
      await Api.prompt(id, text, queue, images);
      if (!preset) {
        this.input.value = "";
        this.grow();
        Attach.clear();
      }
      Transcript.pinned = true;
      // The first prompt names the session.
      if (Sessions.current && Sessions.current.turn === 0) Sessions.refresh();
    } catch (err) {
      const why = {session_busy: "The agent is still working on the previous turn.",
        queue_full: `Could not queue: ${err.message}`};
      this.showError(why[err.code] || `Could not send: ${err.message}`);
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

  /** Reflect the turn state: running indicator and its timer, Stop only while a turn runs. */
  update() {
    if (!this.form) return;
    const running = Transcript.turnActive;
    const waiting = running ? Cards.pendingCount() : 0;
    this.stop.hidden = !running;
    this.stop.disabled = this.stopping;
    // While a turn runs, Send queues the message for after it.
    this.send.disabled = this.sending;
    this.send.setAttribute("aria-label", running ? "Queue" : "Send");
    this.send.title = running ? "Queue: sent when this turn ends" : "";
    this.send.querySelector("span").textContent = running ? "Queue" : "Send";
    // Short enough for one line on a phone; the Send button says "Queue" on wider screens.
    this.input.placeholder = running ? "Queue a message…" : "Message the agent…";
    Queue.render();
    document.querySelectorAll("[data-preset]").forEach((b) => { b.disabled = running || this.sending; });
    $("turn-status").hidden = !running;
    $("turn-status").dataset.waiting = waiting ? "true" : "false";
    $("turn-status-text").textContent = waiting ? "Waiting for your answer" : this.stopping ? "Stopping…" : "Working…";
    if (running && !this.timer) this.timer = setInterval(() => this.tick(), 1000);
    if (!running && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
    this.tick();
    Sessions.renderState();
  },

  tick() {
    const started = Transcript.turnStarted;
    const elapsed = started ? Date.now() - started : 0;
    $("turn-timer").textContent = Transcript.turnActive && elapsed >= 1000 ? formatDuration(elapsed) : "";
  },
};

// ------------------------------------------------------------------ Slash commands

/** Completion of the agent's slash commands (the session's newest `commands` event) while the
 *  message is `/` and a name: arrows move, Enter or Tab completes, Escape closes, a tap picks.
 *  Commands the agent refuses headless are listed greyed with the reason, and never sent. */
const Slash = {
  commands: [],
  shown: [],
  active: -1,

  init(input) {
    this.input = input;
    this.list = $("slash-list");
    this.status = $("slash-status");
    input.addEventListener("input", () => this.refresh());
    input.addEventListener("click", () => this.refresh());
    input.addEventListener("blur", () => setTimeout(() => {
      if (document.activeElement !== input) this.close();
    }, 150));
  },

  set(commands) {
    this.commands = Array.isArray(commands) ? commands : [];
    if (!this.list.hidden) this.refresh();
  },

  reset() {
    this.commands = [];
    this.close();
  },

  /** The command a message starts with (`/name …`), if the agent listed it. */
  find(text) {
    const m = /^\/(\S+)/.exec(text.trim());
    if (!m) return null;
    const name = m[1].toLowerCase();
    return this.commands.find((c) => c.name.toLowerCase() === name
      || (c.aliases || []).some((a) => a.toLowerCase() === name)) || null;
  },

  refused(text) {
    const command = this.find(text);
    return command && command.available === false ? command : null;
  },

  /** Matches for the word after `/`: names (and aliases) that start with it, then the rest
   *  that contain it. */
  matches(word) {
    const w = word.toLowerCase();
    const names = (c) => [c.name, ...(c.aliases || [])].map((n) => n.toLowerCase());
    const starts = this.commands.filter((c) => names(c).some((n) => n.startsWith(w)));
    const contains = this.commands.filter((c) => !starts.includes(c) && names(c).some((n) => n.includes(w)));
    return [...starts, ...contains];
  },

  refresh() {
    const value = this.input.value;
    const m = /^\/(\S*)$/.exec(value);
    const atEnd = this.input.selectionStart === value.length;
    if (!m || !atEnd) return this.close();
    if (!this.commands.length) {
      // Before this session's agent has run: what the same agent listed in another session.
      const agent = Sessions.current && (Sessions.agents || []).find((a) => a.name === Sessions.current.agent);
      if (agent && Array.isArray(agent.commands) && agent.commands.length) this.commands = agent.commands;
      else return this.render([], "The agent lists its commands once it has answered a first message.");
    }
    const found = this.matches(m[1]);
    this.render(found, found.length ? "" : `No command starts with /${m[1]}.`);
  },

  render(found, note) {
    this.shown = found;
    this.active = found.length ? 0 : -1;
    const items = found.map((c, i) => {
      const off = c.available === false;
      const detail = off ? `Not available: ${c.reason}` : c.description || "";
      const item = el("li", {className: `slash-item${off ? " is-refused" : ""}`, attrs: {
        role: "option", id: `slash-opt-${i}`, "aria-selected": "false",
        "aria-disabled": off ? "true" : undefined, "data-command": c.name}}, [
        el("span", {className: "slash-name", text: `/${c.name}`}),
        c.argument_hint ? el("span", {className: "slash-hint", text: c.argument_hint}) : null,
        detail ? el("span", {className: "slash-desc", text: detail}) : null,
      ]);
      // Keep the focus (and the phone's keyboard) in the message box.
      item.addEventListener("pointerdown", (e) => e.preventDefault());
      item.addEventListener("click", () => this.complete(i));
      return item;
    });
    if (note) items.push(el("li", {className: "slash-note", text: note, attrs: {role: "presentation"}}));
    this.list.replaceChildren(...items);
    this.list.hidden = false;
    this.status.textContent = found.length ? `${found.length} command${found.length === 1 ? "" : "s"}` : note;
    this.highlight();
  },

  highlight() {
    [...this.list.querySelectorAll(".slash-item")].forEach((item, i) => {
      item.setAttribute("aria-selected", i === this.active ? "true" : "false");
      if (i === this.active) item.scrollIntoView({block: "nearest"});
    });
    if (this.active >= 0) this.input.setAttribute("aria-activedescendant", `slash-opt-${this.active}`);
    else this.input.removeAttribute("aria-activedescendant");
  },

  close() {
    if (!this.list || this.list.hidden) return;
    this.list.hidden = true;
    this.list.replaceChildren();
    this.shown = [];
    this.active = -1;
    this.input.removeAttribute("aria-activedescendant");
    this.status.textContent = "";
  },

  /** Put `/name ` in the box; a refused one says why at once. */
  complete(i) {
    const command = this.shown[i];
    if (!command) return;
    this.input.value = `/${command.name}${command.available === false ? "" : " "}`;
    this.close();
    this.input.focus();
    Composer.grow();
    Composer.showError(command.available === false ? `/${command.name} is not available: ${command.reason}.` : "");
  },

  /** Keys while the list is open; true when the key was the list's. */
  onKey(e) {
    if (this.list.hidden || e.isComposing) return false;
    const n = this.shown.length;
    if (e.key === "Escape") this.close();
    else if (e.key === "ArrowDown" && n) this.active = (this.active + 1) % n;
    else if (e.key === "ArrowUp" && n) this.active = (this.active - 1 + n) % n;
    else if ((e.key === "Enter" || e.key === "Tab") && !e.shiftKey && this.active >= 0) this.complete(this.active);
    else return false;
    e.preventDefault();
    if (!this.list.hidden) this.highlight();
    return true;
  },
};

// ------------------------------------------------------------------ Queue

/** Prompts queued on the server while a turn ran (prompt_queued / prompt_dequeued events, so
 *  every tab and a reload see the same queue). Each can be removed; once the last turn was
 *  stopped (the queue stays), sent now. */
const Queue = {
  items: [], // {queue_id, text}, first to be sent first
  shown: null,

  reset() {
    this.items = [];
    this.render();
  },

  apply(event) {
    if (event.kind === "prompt_queued") this.items.push({queue_id: event.queue_id, text: event.text});
    else this.items = this.items.filter((q) => q.queue_id !== event.queue_id);
    this.render();
  },

  render() {
    const list = $("queue-list");
    if (!list) return;
    const idle = !Transcript.turnActive;
    // Composer.update runs on every event: rebuild only on a change, so no button is replaced
    // under a finger mid-tap.
    const key = `${idle}|${this.items.map((q) => q.queue_id).join(",")}`;
    if (key === this.shown) return;
    this.shown = key;
    list.hidden = this.items.length === 0;
    list.replaceChildren(...this.items.map((item, i) => {
      const n = i + 1;
      const remove = el("button", {className: "icon-btn queue-remove", attrs: {type: "button",
        "aria-label": `Remove queued message ${n}`, title: "Remove"}}, [icon("M6 6l12 12M18 6L6 18")]);
      remove.addEventListener("click", () => this.act(item, "remove"));
      const buttons = [remove];
      if (idle) {
        const now = el("button", {className: "btn btn-small queue-send", text: "Send now",
          attrs: {type: "button", "aria-label": `Send queued message ${n} now`}});
        now.addEventListener("click", () => this.act(item, "send"));
        buttons.unshift(now);
      }
      return el("li", {className: "queue-item", attrs: {"data-queue-id": item.queue_id}}, [
        el("span", {className: "queue-label", text: idle ? "Queued" : `Queued · ${n === 1 ? "next" : `#${n}`}`}),
        el("span", {className: "queue-text", text: item.text, attrs: {title: item.text}}),
        ...buttons,
      ]);
    }));
  },

  async act(item, what) {
    const id = Sessions.currentId;
    const n = this.items.indexOf(item) + 1;
    if (!id || n < 1) return;
    Composer.showError("");
    try {
      if (what === "send") await Api.sendQueued(id, n, item.queue_id);
      else await Api.unqueue(id, n, item.queue_id);
    } catch (err) {
      // 404: it was sent or removed meanwhile (its event is on the way).
      if (!(err instanceof ApiError && err.status === 404)) {
        Composer.showError(`Could not ${what === "send" ? "send" : "remove"} it: ${err.message}`);
      }
    }
  },
};

// ------------------------------------------------------------------ Drawer

const Drawer = {
  init() {
    this.node = $("drawer");
    this.scrim = $("scrim");
    this.button = $("menu-btn");
    this.narrow = window.matchMedia("(max-width: 899px)");
    this.button.addEventListener("click", () => this.open());
    $("drawer-close").addEventListener("click", () => this.close());
    this.scrim.addEventListener("click", () => this.close());
  },
  isOpen: () => document.body.classList.contains("drawer-open"),
  open() {
    Popovers.closeAll();
    document.body.classList.add("drawer-open");
    this.scrim.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    $("agent-select").focus();
  },
  close() {
    if (!this.isOpen()) return false;
    document.body.classList.remove("drawer-open");
    this.scrim.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
    if (this.narrow.matches) this.button.focus();
    return true;
  },
};

// ------------------------------------------------------------------ Popovers

/** The inbox panel and the session menu: one open at a time, Escape or a click outside closes. */
const Popovers = {
  pairs: [],
  init() {
    this.pairs = [[$("inbox-btn"), $("inbox-panel")], [$("session-menu-btn"), $("session-menu")],
      [$("mode-chip"), $("mode-panel")]];
    for (const [button, panel] of this.pairs) {
      button.addEventListener("click", () => (panel.hidden ? this.open(button, panel) : this.close(button, panel)));
    }
    $("inbox-close").addEventListener("click", () => this.closeAll(true));
    document.addEventListener("click", (e) => {
      for (const [button, panel] of this.pairs) {
        if (!panel.hidden && !panel.contains(e.target) && !button.contains(e.target)) this.close(button, panel);
      }
    });
    document.addEventListener("keydown", (e) => {
      if (e.key !== "Escape") return;
      if (this.closeAll(true)) return;
      Drawer.close();
    });
  },
  open(button, panel) {
    this.closeAll();
    panel.hidden = false;
    button.setAttribute("aria-expanded", "true");
    if (panel.id === "inbox-panel") Inbox.onOpen();
    const first = panel.querySelector("button:not([hidden]):not(:disabled), a[href]");
    if (first) first.focus();
  },
  close(button, panel, refocus = false) {
    if (panel.hidden) return false;
    panel.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (refocus) button.focus();
    return true;
  },
  closeAll(refocus = false) {
    let closed = false;
    for (const [button, panel] of this.pairs) closed = this.close(button, panel, refocus) || closed;
    return closed;
  },
};

// ------------------------------------------------------------------ Dialog

/** A modal question: ask({title, text, field?, ok, danger}) resolves to the value, or null. */
const Dialog = {
  ask({title, text = "", field = null, value = "", ok = "OK", danger = false}) {
    const dialog = $("dialog");
    $("dialog-title").textContent = title;
    $("dialog-text").textContent = text;
    $("dialog-text").hidden = !text;
    $("dialog-field").hidden = !field;
    $("dialog-label").textContent = field || "";
    $("dialog-input").value = value;
    $("dialog-ok").textContent = ok;
    $("dialog-ok").classList.toggle("btn-danger", danger);
    $("dialog-ok").classList.toggle("btn-primary", !danger);
    return new Promise((resolve) => {
      const done = (result) => {
        $("dialog-form").onsubmit = null;
        $("dialog-cancel").onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(result);
      };
      $("dialog-form").onsubmit = (e) => {
        e.preventDefault();
        done(field ? $("dialog-input").value : true);
      };
      $("dialog-cancel").onclick = () => done(null);
      dialog.onclose = () => done(null);
      dialog.showModal();
      if (field) $("dialog-input").select();
      else $("dialog-cancel").focus();
    });
  },
};

// ------------------------------------------------------------------ Folder picker

/** The last part of a folder's path ("/home/me/src/app" -> "app"). */
const folderName = (path) => (path || "").replace(/\/+$/, "").split("/").pop() || path || "";

/** Agents whose own saved conversations the server lists (GET /api/projects/conversations). */
const SAVES_CONVERSATIONS = ["claude"];
/** Conversations shown before "Show all". */
const CONVERSATIONS_SHOWN = 3;

/**
 * The new-session dialog when the server has project roots (TETHER_PROJECT_ROOTS): recent
 * folders first, then the roots; type to filter, tap a folder to go into it, "Open" beside
 * it (or "Open session here") to start the session there. Inside a folder, the conversations
 * the agent saved there on its own come first, each with "Continue". choose(agent) resolves
 * to the folder's path, to {cwd, resume} for a conversation to continue, or null when
 * cancelled. Without roots it is never shown (a session gets its own workspace, as before).
 */
const Picker = {
  path: null,
  parent: null,
  entries: [],
  recent: [],
  truncated: false,
  roots: null,
  agent: null,
  conversations: [],
  allConversations: false,
  asked: 0,

  /** True when the server offers project folders (asked once per page; a failed ask is
   *  asked again next time, and meanwhile a session gets its own workspace). */
  async enabled() {
    if (this.roots === null) {
      try {
        this.roots = (await Api.projects()).entries;
      } catch (err) {
        return false;
      }
    }
    return this.roots.length > 0;
  },

  choose(agent) {
    this.agent = agent || null;
    const dialog = $("picker");
    $("picker-filter").value = "";
    return new Promise((resolve) => {
      const done = (result) => {
        $("picker-form").onsubmit = null;
        $("picker-cancel").onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(result);
      };
      this.done = done;
      $("picker-form").onsubmit = (e) => {
        e.preventDefault();
        if (this.path) done(this.path);
      };
      $("picker-cancel").onclick = () => done(null);
      dialog.onclose = () => done(null);
      $("picker-up").onclick = () => this.go(this.parent);
      $("picker-filter").oninput = () => this.render();
      $("picker-filter").onkeydown = (e) => this.onKey(e);
      // A phone's keyboard would hide half the folders: there, typing starts with a tap.
      const touch = window.matchMedia("(pointer: coarse)").matches;
      $("picker-filter").toggleAttribute("autofocus", !touch);
      $("picker-cancel").toggleAttribute("autofocus", touch);
      dialog.showModal();
      this.go(null);
      // Which folders have a session running: as fresh as the server says, not 15 s old.
      Sessions.refresh().then(() => { if (dialog.open) this.render(); });
    });
  },

  /** Show ``path``'s folders (null: recent folders and the roots), and the conversations
   *  the agent saved in it. */
  async go(path) {
    this.showWarn("");
    const asked = ++this.asked;
    try {
      if (path) {
        const [listing, saved] = await Promise.all([Api.projects(path), this.saved(path)]);
        if (asked !== this.asked) return; // another folder was chosen meanwhile
        Object.assign(this, {path: listing.path, parent: listing.parent,
          entries: listing.entries, truncated: listing.truncated,
          conversations: saved, allConversations: false});
      } else {
        const [top, recent] = await Promise.all([Api.projects(), Api.recentProjects()]);
        if (asked !== this.asked) return;
        Object.assign(this, {path: null, parent: null, entries: top.entries,
          recent: recent.entries, truncated: false, conversations: []});
        this.roots = top.entries;
      }
    } catch (err) {
      this.showWarn(`Could not open that folder: ${err.message}`);
      return;
    }
    $("picker-filter").value = "";
    this.render();
  },

  /** The conversations this agent saved in ``path`` (none when it saves none Tether reads,
   *  or when asking fails: the folder itself can still be opened). */
  async saved(path) {
    if (!SAVES_CONVERSATIONS.includes(this.agent)) return [];
    try {
      return (await Api.conversations(path, this.agent)).conversations;
    } catch (err) {
      return [];
    }
  },

  conversationRow(c) {
    const n = `${c.messages}${c.partial ? "+" : ""} message${c.messages === 1 ? "" : "s"}`;
    const info = el("div", {className: "picker-go picker-conv", attrs: {title: c.title}}, [
      el("span", {className: "picker-name", text: c.title}),
      el("span", {className: "picker-sub", text: `${relativeTime(c.updated_at)} · ${n}`}),
    ]);
    // A conversation a session continues already is opened there, not continued twice.
    const open = Boolean(c.session_id);
    const go = el("button", {className: "btn btn-small picker-pick", text: open ? "Open" : "Continue",
      attrs: {type: "button", "aria-label": `${open ? "Open the session of" : "Continue"} the conversation ${c.title}`}});
    go.addEventListener("click", () => {
      if (!this.done) return;
      if (!open) return this.done({cwd: this.path, resume: c.id});
      this.done(null);
      Sessions.open(c.session_id);
    });
    return el("li", {className: "picker-row picker-conv-row"}, [info, go]);
  },

  /** The "Continue a conversation" part of the list, above the folders. */
  conversationItems(folders) {
    const q = $("picker-filter").value.trim().toLowerCase();
    const found = this.path ? this.conversations.filter((c) => !q || c.title.toLowerCase().includes(q)) : [];
    if (!found.length) return [];
    const shown = this.allConversations ? found : found.slice(0, CONVERSATIONS_SHOWN);
    const items = [el("li", {className: "picker-heading", text: "Continue a conversation"}),
      ...shown.map((c) => this.conversationRow(c))];
    if (shown.length < found.length) {
      const more = el("button", {className: "btn btn-small picker-more", text: `Show all ${found.length}`,
        attrs: {type: "button"}});
      more.addEventListener("click", () => { this.allConversations = true; this.render(); });
      items.push(el("li", {className: "picker-row picker-more-row"}, [more]));
    }
    if (folders) items.push(el("li", {className: "picker-heading", text: "Folders"}));
    return items;
  },

  /** Sessions running (or waiting for you) in ``path``, this page's list as it knows it. */
  busyIn(path) {
    return Sessions.list.filter((s) => s.cwd === path && (s.state === "running" || s.state === "waiting"));
  },

  row(folder) {
    const busy = this.busyIn(folder.path);
    // Inside a folder the path is the one above, shown once; recent folders and roots say theirs.
    const sub = [folder.branch ? `⎇ ${folder.branch}` : folder.git ? "git" : "",
      this.path ? "" : folder.path].filter(Boolean).join(" · ");
    const go = el("button", {className: "picker-go", attrs: {type: "button", title: folder.path}}, [
      el("span", {className: "picker-name", text: folder.name}),
      el("span", {className: "picker-sub", text: sub}),
    ]);
    go.addEventListener("click", () => this.go(folder.path));
    const open = el("button", {className: "btn btn-small picker-pick", text: "Open",
      attrs: {type: "button", "aria-label": `Open a session in ${folder.name}`}});
    open.addEventListener("click", () => this.done && this.done(folder.path));
    const parts = [go];
    if (busy.length) {
      parts.push(el("span", {className: "badge badge-running picker-busy", text: "running",
        attrs: {title: `Running here: ${busy.map((s) => Sessions.title(s)).join(", ")}`}}));
    }
    parts.push(open);
    return el("li", {className: "picker-row"}, parts);
  },

  visible() {
    const q = $("picker-filter").value.trim().toLowerCase();
    const match = (f) => !q || f.name.toLowerCase().includes(q) || (q.includes("/") && f.path.toLowerCase().includes(q));
    return {
      recent: this.path ? [] : this.recent.filter(match),
      entries: this.entries.filter(match),
    };
  },

  render() {
    const {recent, entries} = this.visible();
    const items = this.conversationItems(entries.length > 0);
    if (recent.length) {
      items.push(el("li", {className: "picker-heading", text: "Recent"}));
      items.push(...recent.map((f) => this.row(f)));
      items.push(el("li", {className: "picker-heading", text: "Project roots"}));
    }
    items.push(...entries.map((f) => this.row(f)));
    $("picker-list").replaceChildren(...items);
    const none = !recent.length && !entries.length && !items.length;
    $("picker-empty").hidden = !none;
    $("picker-empty").textContent = $("picker-filter").value.trim()
      ? "No folder matches. Enter an absolute path to go there."
      : this.truncated ? "" : "No folders in here.";
    $("picker-path").textContent = this.path || "Recent folders and project roots";
    $("picker-path").title = this.path || "";
    $("picker-up").disabled = !this.path;
    $("picker-open").disabled = !this.path;
    const busy = this.path ? this.busyIn(this.path) : [];
    if (busy.length) {
      this.showWarn(`Another session is already running in this folder: ${busy.map((s) => Sessions.title(s)).join(", ")}.`);
    } else if (this.truncated) {
      this.showWarn(`Only the first ${this.entries.length} folders are shown: type to filter.`);
    } else {
      this.showWarn("");
    }
  },

  showWarn(text) {
    $("picker-warn").textContent = text;
    $("picker-warn").hidden = !text;
  },

  onKey(e) {
    if (e.key !== "Enter") return;
    e.preventDefault();
    const text = $("picker-filter").value.trim();
    if (text.startsWith("/")) return this.go(text);
    const {recent, entries} = this.visible();
    const all = [...recent, ...entries];
    if (all.length === 1) this.go(all[0].path);
  },
};

// ------------------------------------------------------------------ Modes

/** Permission modes in words (Claude Code's names; the local agent uses the same; Gemini
 *  CLI's autoEdit and yolo, Codex's own). */
const MODE_LABELS = {default: "Ask first", acceptEdits: "Accept edits", plan: "Plan",
  auto: "Auto (classifier)", dontAsk: "Deny unasked", bypassPermissions: "Bypass permissions",
  autoEdit: "Auto edit", yolo: "YOLO (asks nobody)", "on-request": "Sandboxed, ask to leave it",
  "read-only": "Read-only", "full-access": "Full access"};
/** Modes in which nothing asks a person, every agent's (the server's list,
 *  tether/agents/modes.py UNATTENDED_MODES): offered only with TETHER_ALLOW_BYPASS=1. */
const UNATTENDED_MODES = new Set((document.body.dataset.unattendedModes || "bypassPermissions auto")
  .split(" ").filter(Boolean));

/**
 * The shown session's model and permission mode: the header's chip and picker, the one-tap
 * Plan switch, and the new-session options. The session object says what they are; `mode` /
 * `model` events (from any client, or the agent leaving Plan mode) keep it current live.
 */
const Modes = {
  /** Per session: the mode to go back to when Plan is switched off (this tab's memory). */
  before: new Map(),

  init() {
    $("plan-btn").addEventListener("click", () => this.togglePlan());
    $("mode-close").addEventListener("click", () => Popovers.closeAll(true));
    $("model-select").addEventListener("change", (e) => this.set({model: e.target.value}));
    $("mode-select").addEventListener("change", (e) => this.set({permission_mode: e.target.value}));
    $("agent-select").addEventListener("change", () => this.fillNew());
  },

  label: (mode) => MODE_LABELS[mode] || mode || "",

  agent(name) {
    return (Sessions.agents || []).find((a) => a.name === name) || null;
  },

  /** A model id's name, as the session's agent lists it (the id itself when it does not). */
  modelName(id, agentName = Sessions.current && Sessions.current.agent) {
    const agent = this.agent(agentName);
    const found = agent && (agent.models || []).find((m) => m.id === id);
    return found ? found.name.replace(/ \(recommended\)$/, "") : id || "";
  },

  /** The modes to offer for ``agent``: those that ask nobody only where the server allows
   *  them (and the session's own, whatever it is). */
  modes(agent, current) {
    const allow = document.body.dataset.allowBypass === "1";
    return ((agent && agent.permission_modes) || ["default"])
      .filter((m) => allow || !UNATTENDED_MODES.has(m) || m === current);
  },

  fill(select, items, value) {
    select.replaceChildren(...items.map(([id, text]) => el("option", {text, attrs: {value: id}})));
    if (value !== undefined && !items.some(([id]) => id === value)) {
      select.append(el("option", {text: value, attrs: {value}}));
    }
    if (value !== undefined) select.value = value;
  },

  render() {
    const s = Sessions.current;
    $("modebar").hidden = !s || !s.permission_mode;
    if (!s || !s.permission_mode) return;
    const agent = this.agent(s.agent);
    const plan = s.permission_mode === "plan";
    $("plan-btn").setAttribute("aria-pressed", String(plan));
    $("plan-btn").hidden = !this.modes(agent, s.permission_mode).includes("plan");
    $("mode-chip-model").textContent = this.modelName(s.model, s.agent);
    $("mode-chip-mode").textContent = this.label(s.permission_mode);
    $("modebar").dataset.mode = s.permission_mode;
    this.fill($("model-select"), ((agent && agent.models) || []).map((m) => [m.id, m.name]), s.model);
    this.fill($("mode-select"), this.modes(agent, s.permission_mode).map((m) => [m, this.label(m)]), s.permission_mode);
    $("mode-note").textContent = agent && agent.models_source === "static"
      ? "The models are Tether's list until the agent has run once; then its own." : "";
  },

  async togglePlan() {
    const s = Sessions.current;
    if (!s) return;
    if (s.permission_mode === "plan") return this.set({permission_mode: this.before.get(s.id) || "default"});
    this.before.set(s.id, s.permission_mode);
    return this.set({permission_mode: "plan"});
  },

  async set(fields) {
    const s = Sessions.current;
    if (!s) return;
    try {
      Sessions.current = await Api.update(s.id, fields);
      Sessions.mergeCurrent();
    } catch (err) {
      Composer.showError(`Could not change the ${fields.model ? "model" : "permission mode"}: ${err.message}`);
      this.render();
    }
  },

  /** A ``mode`` / ``model`` event of the shown session: the header follows it. */
  applyEvent(event, fields) {
    const s = Sessions.current;
    if (!s || (event.session_id && event.session_id !== s.id)) return;
    Object.assign(s, fields);
    const listed = Sessions.list.find((x) => x.id === s.id);
    if (listed) Object.assign(listed, fields);
    this.render();
  },

  /** The new-session options for the chosen agent, defaults selected. */
  fillNew() {
    const agent = this.agent($("agent-select").value);
    const models = (agent && agent.models) || [];
    const modes = this.modes(agent);
    $("new-options").hidden = !agent || (models.length < 2 && modes.length < 2);
    this.fill($("new-model"), models.map((m) => [m.id, m.name]),
      (models.find((m) => m.default) || models[0] || {}).id);
    this.fill($("new-mode"), modes.map((m) => [m, this.label(m)]), modes[0]);
  },

  /** What a new session is created with: only what differs from the agent's defaults. */
  newOptions() {
    const agent = this.agent($("agent-select").value);
    if (!agent || $("new-options").hidden) return {};
    const options = {};
    const model = $("new-model").value;
    const fallback = (agent.models || []).find((m) => m.default);
    if (model && (!fallback || model !== fallback.id)) options.model = model;
    const mode = $("new-mode").value;
    if (mode && mode !== (agent.permission_modes || ["default"])[0]) options.permission_mode = mode;
    return options;
  },
};

// ------------------------------------------------------------------ Sessions

const Sessions = {
  list: [],
  currentId: null,
  current: null,
  revealRequest: null,

  async init() {
    this.listNode = $("session-list");
    this.select = $("agent-select");
    $("new-session").addEventListener("submit", (e) => { e.preventDefault(); this.create(); });
    $("empty-new").addEventListener("click", () => this.create());
    $("rename-btn").addEventListener("click", () => this.rename());
    $("delete-btn").addEventListener("click", () => this.remove());
    $("auto-approve-btn").addEventListener("click", () => this.setAutoApprove(!(this.current && this.current.auto_approve)));
    $("auto-off-btn").addEventListener("click", () => this.setAutoApprove(false));
    window.addEventListener("hashchange", () => this.show(this.fromHash()));
    $("logout-btn").addEventListener("click", () => this.logout());
    $("refused-close").addEventListener("click", () => Refused.hide());
    // A login URL (/#token=…) opened by a browser that is already logged in: drop the token.
    if (/(?:^#|&)token=/.test(location.hash)) history.replaceState(null, "", location.pathname + location.search);
    this.loadAgents();
    const first = this.refresh();
    this.show(this.fromHash());
    await first;
    this.renderList();
    setInterval(() => { if (!document.hidden) this.refresh(); }, 15000);
  },

  async logout() {
    try {
      await Api.logout();
    } catch (err) {
      return Composer.showError(`Could not log out: ${err.message}`);
    }
    window.location.replace("/#logged-out");
  },

  fromHash() {
    const match = /(?:^#|&)s=([^&]+)/.exec(location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  },

  async loadAgents() {
    try {
      const {agents} = await Api.agents();
      this.agents = agents;
      Intro.update();
      const preferred = document.body.dataset.defaultAgent;
      this.select.replaceChildren(...agents.map((a) => el("option", {
        text: a.available ? a.name : `${a.name} (unavailable)`,
        attrs: {value: a.name, disabled: !a.available, title: a.available ? a.description : a.reason},
      })));
      // An agent that cannot work here says why, and what to set, in words a phone shows too.
      const why = agents.filter((a) => !a.available && a.reason);
      $("agent-why").replaceChildren(...why.map((a) => el("details", {}, [
        el("summary", {text: `Why is ${a.name} unavailable?`}), el("p", {text: a.reason})])));
      $("agent-why").hidden = !why.length;
      const pick = agents.find((a) => a.available && a.name === preferred) || agents.find((a) => a.available);
      if (pick) this.select.value = pick.name;
      $("new-session-btn").disabled = !pick;
      Modes.fillNew();
      Modes.render();
    } catch (err) {
      this.select.replaceChildren(el("option", {text: "agents unavailable", attrs: {value: ""}}));
    }
  },

  async refresh() {
    try {
      const {sessions} = await Api.sessions();
      this.list = sessions.sort((a, b) => b.created_at - a.created_at);
      const fresh = this.list.find((s) => s.id === this.currentId);
      if (fresh) {
        this.current = fresh;
        this.renderHeader();
      }
      this.renderList();
    } catch (err) {
      /* the list is refreshed again later; the indicator reports connection trouble */
    }
  },

  title: (s) => s.title || `${s.agent} session`,

  renderList() {
    const pending = Inbox.countBySession();
    const items = this.list.map((s) => {
      const waiting = pending.get(s.id) || 0;
      const state = s.id === this.currentId ? this.liveState() : waiting ? "waiting" : s.state;
      const btn = el("button", {className: "session-item", attrs: {type: "button",
        "aria-current": s.id === this.currentId ? "true" : undefined}}, [
        el("span", {className: "session-name", text: this.title(s)}),
        el("span", {className: "session-sub", text: `${s.project ? `${folderName(s.cwd)} · ` : ""}${s.agent} · ${relativeTime(s.created_at)}${s.auto_approve ? " · auto-approve" : ""}`,
          attrs: {title: s.project ? s.cwd : undefined}}),
      ]);
      // One pill: how many requests wait for you, else whether it is running.
      if (waiting) {
        btn.append(el("span", {className: "badge badge-waiting", text: `${waiting} waiting`,
          attrs: {title: `${waiting} waiting for you`}}));
      } else if (state === "running" || state === "waiting") {
        btn.append(el("span", {className: `badge badge-${state}`, text: state === "waiting" ? "waiting" : "running"}));
      }
      btn.addEventListener("click", () => this.open(s.id));
      return el("li", {}, [btn]);
    });
    this.listNode.replaceChildren(...items);
    $("session-list-empty").hidden = items.length > 0;
  },

  open(id, requestId = null) {
    Drawer.close();
    Popovers.closeAll();
    this.revealRequest = requestId;
    if (this.fromHash() === id) this.show(id);
    else location.hash = `s=${encodeURIComponent(id)}`;
    if (requestId && id === this.currentId) this.tryReveal();
  },

  tryReveal() {
    if (this.revealRequest && Transcript.reveal(this.revealRequest)) this.revealRequest = null;
  },

  async create() {
    const agent = this.select.value || undefined;
    const button = $("new-session-btn");
    let cwd, resume;
    if (await Picker.enabled()) {
      Drawer.close();
      const picked = await Picker.choose(agent);
      if (picked === null) return;
      // A folder's path, or {cwd, resume}: a conversation the agent saved there, continued.
      ({cwd, resume} = typeof picked === "string" ? {cwd: picked} : picked);
    }
    button.disabled = true;
    try {
      const session = await Api.create(agent, cwd, {...Modes.newOptions(), ...(resume ? {resume} : {})});
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
    this.currentId = id;
    Transcript.clear();
    Composer.showError("");
    const has = Boolean(id);
    $("empty-state").hidden = has;
    $("transcript").hidden = !has;
    $("dock").hidden = !has;
    $("session-menu-btn").hidden = !has;
    Changes.follow(id);
    for (const id of ["meta-cwd", "meta-agent", "meta-model", "meta-usage"]) $(id).textContent = "";
    this.current = this.list.find((s) => s.id === id) || null;
    this.renderHeader();
    this.renderList();
    Feeder.show(id, {
      cursor: () => Transcript.lastId,
      apply: (event) => {
        Transcript.apply(event);
        Changes.noteEvent(event);
        if (event.kind === "result" && event.session_usage && this.current && this.current.id === event.session_id) {
          this.current.usage = event.session_usage;
          this.renderUsage();
        }
        if (this.revealRequest && event.request_id === this.revealRequest) this.tryReveal();
      },
      reset: () => Transcript.clear(),
      gone: () => this.showGone(id),
    });
    Link.want(id);
    if (!has) return;
    $("download-link").href = Api.transcriptUrl(id);
    $("download-link").setAttribute("download", `tether-${id.slice(0, 8)}.jsonl`);
    Api.session(id).then((s) => {
      if (this.currentId !== id) return;
      this.current = s;
      this.renderHeader();
    }).catch((err) => {
      if (err instanceof ApiError && err.status === 404 && this.currentId === id) this.showGone(id);
    });
  },

  renderHeader() {
    const s = this.current;
    $("session-title").textContent = s ? this.title(s) : this.currentId ? "Loading…" : "Tether";
    const folder = s && s.project ? s.cwd : "";
    $("meta-cwd").textContent = folder ? folderName(folder) : "";
    $("meta-cwd").title = folder;
    $("presets").hidden = !(s && s.agent === "local");
    Intro.update();
    document.title = `${Inbox.count ? `(${Inbox.count}) ` : ""}${s ? `${this.title(s)} · Tether` : "Tether"}`;
    const auto = Boolean(s && s.auto_approve);
    $("auto-banner").hidden = !auto;
    $("auto-approve-btn").setAttribute("aria-checked", String(auto));
    this.renderUsage();
    Modes.render();
    this.renderState();
  },

  /** The session's tokens and cost so far: short in the header, in words in its menu. */
  renderUsage() {
    const u = this.current && this.current.usage;
    const used = u && (u.input_tokens || u.output_tokens || u.cost_usd);
    const words = used ? usageWords(u) : "";
    $("meta-usage").textContent = used ? usageShort(u) : "";
    $("meta-usage").title = words;
    $("menu-usage").textContent = used ? `So far: ${words}` : "";
    $("menu-usage").hidden = !used;
  },

  /** The shown session's state, as the transcript knows it (fresher than the list). */
  liveState() {
    if (!this.currentId) return "idle";
    if (Transcript.turnActive) return Cards.pendingCount() ? "waiting" : "running";
    return Transcript.lastState === "stopped" ? "stopped" : "idle";
  },

  /** The state pill, and the honest banner while this page cannot hear the server. */
  renderState() {
    const pill = $("state-pill");
    const banner = $("away-banner");
    if (!this.currentId || !pill) {
      if (pill) pill.hidden = true;
      if (banner) banner.hidden = true;
      return;
    }
    const state = this.liveState();
    const labels = {idle: "idle", running: "running", waiting: "waiting for you", stopped: "agent stopped"};
    pill.hidden = false;
    pill.dataset.state = state;
    pill.textContent = labels[state];
    const away = Status.away;
    banner.hidden = !away;
    if (away) {
      banner.textContent = Transcript.turnActive
        ? "You are offline: the agent keeps working on the server. This page catches up when the connection is back."
        : "You are offline. Nothing is lost: this page catches up when the connection is back.";
    }
    const s = this.list.find((x) => x.id === this.currentId);
    if (s && s.state !== (state === "stopped" ? "idle" : state)) {
      s.state = state === "stopped" ? "idle" : state;
      this.renderList();
    }
  },

  showGone(id) {
    if (id !== this.currentId) return;
    $("session-title").textContent = "Session not found";
    for (const id of ["meta-cwd", "meta-agent", "meta-model", "meta-usage"]) $(id).textContent = "";
    $("dock").hidden = true;
    $("session-menu-btn").hidden = true;
    Changes.follow(null);
    $("state-pill").hidden = true;
    $("auto-banner").hidden = true;
    $("modebar").hidden = true;
    Transcript.root.replaceChildren(el("li", {className: "item notice notice-warn",
      text: "This session no longer exists (it was deleted, or the server restarted without a durable store)."}));
    this.list = this.list.filter((s) => s.id !== id);
    this.renderList();
    Status.set("gone");
  },

  /** The shown session's events keep its list entry current without refetching. */
  noteEvent() {
    // renderState (called from Composer.update) reconciles the list entry.
  },

  async rename() {
    Popovers.closeAll();
    const s = this.current;
    if (!s) return;
    const title = await Dialog.ask({title: "Rename session", field: "Title", value: this.title(s), ok: "Rename"});
    if (title === null || !title.trim()) return $("session-menu-btn").focus();
    try {
      this.current = await Api.update(s.id, {title: title.trim()});
      this.mergeCurrent();
    } catch (err) {
      Composer.showError(`Could not rename: ${err.message}`);
    }
    $("session-menu-btn").focus();
  },

  async remove() {
    Popovers.closeAll();
    const s = this.current;
    if (!s) return;
    const ok = await Dialog.ask({title: `Delete “${this.title(s)}”?`,
      text: s.project
        ? `Its running turn is stopped. Its transcript is deleted for good; its folder ${s.cwd} stays as it is.`
        : "Its running turn is stopped. Its transcript and its workspace folder are deleted for good.",
      ok: "Delete", danger: true});
    if (!ok) return $("session-menu-btn").focus();
    try {
      await Api.remove(s.id);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) return Composer.showError(`Could not delete: ${err.message}`);
    }
    this.list = this.list.filter((x) => x.id !== s.id);
    history.replaceState(null, "", location.pathname + location.search);
    this.show(null);
  },

  async setAutoApprove(on) {
    Popovers.closeAll();
    const s = this.current;
    if (!s) return;
    try {
      this.current = await Api.update(s.id, {auto_approve: on});
      this.mergeCurrent();
    } catch (err) {
      Composer.showError(`Could not change auto-approve: ${err.message}`);
    }
  },

  mergeCurrent() {
    const i = this.list.findIndex((x) => x.id === this.current.id);
    if (i >= 0) this.list[i] = {...this.list[i], ...this.current};
    this.renderHeader();
    this.renderList();
  },
};

/** 1234 -> "1.2k", 2500000 -> "2.5M". */
function compactCount(n) {
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)}M`;
}

function usageShort(u) {
  const parts = [`${compactCount(u.input_tokens)} in`, `${compactCount(u.output_tokens)} out`];
  if (typeof u.cost_usd === "number") parts.push(`$${u.cost_usd.toFixed(u.cost_usd < 1 ? 3 : 2)}`);
  return parts.join(" · ");
}

function usageWords(u) {
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const parts = [`${fmt(u.input_tokens)} tokens in`, `${fmt(u.output_tokens)} out`];
  if (u.cache_read_input_tokens) parts.push(`${fmt(u.cache_read_input_tokens)} read from cache`);
  if (typeof u.cost_usd === "number") parts.push(`$${u.cost_usd.toFixed(4)}`);
  return parts.join(", ");
}

// ------------------------------------------------------------------ Attach

/** Images for the next prompt: picked (the phone's photo library too), pasted or dropped;
 *  shown as thumbnails, each removable, until the prompt is sent. */
const Attach = {
  TYPES: ["image/png", "image/jpeg", "image/gif", "image/webp"],
  MAX: 5,
  items: [], // {name, media_type, data (base64), url (object URL for the thumbnail)}

  init() {
    this.input = $("attach-input");
    this.list = $("attachments");
    this.maxBytes = Number(document.body.dataset.maxImageBytes) || 5 * 1024 * 1024;
    $("attach-btn").addEventListener("click", () => this.input.click());
    this.input.addEventListener("change", () => {
      this.add(this.input.files);
      this.input.value = "";
    });
    $("prompt").addEventListener("paste", (e) => {
      const files = [...(e.clipboardData ? e.clipboardData.files : [])];
      if (files.some((f) => f.type.startsWith("image/"))) {
        e.preventDefault();
        this.add(files);
      }
    });
    const dock = $("dock");
    dock.addEventListener("dragover", (e) => {
      if ([...e.dataTransfer.types].includes("Files")) e.preventDefault();
    });
    dock.addEventListener("drop", (e) => {
      if (!e.dataTransfer.files.length) return;
      e.preventDefault();
      this.add(e.dataTransfer.files);
    });
  },

  async add(files) {
    const problems = [];
    for (const file of [...files]) {
      if (!this.TYPES.includes(file.type)) {
        problems.push(`${file.name || "that file"} is not a PNG, JPEG, GIF or WebP image`);
      } else if (file.size > this.maxBytes) {
        problems.push(`${file.name || "that image"} is over ${(this.maxBytes / 1048576).toFixed(0)} MB`);
      } else if (this.items.length >= this.MAX) {
        problems.push(`a message carries at most ${this.MAX} images`);
        break;
      } else {
        const data = await readBase64(file);
        this.items.push({name: file.name || "image", media_type: file.type, data,
          url: URL.createObjectURL(file)});
      }
    }
    Composer.showError(problems.length ? `Not attached: ${problems.join("; ")}.` : "");
    this.render();
  },

  remove(item) {
    URL.revokeObjectURL(item.url);
    this.items = this.items.filter((x) => x !== item);
    this.render();
    $("prompt").focus();
  },

  clear() {
    for (const item of this.items) URL.revokeObjectURL(item.url);
    this.items = [];
    this.render();
  },

  payload() {
    return this.items.map(({media_type, data}) => ({media_type, data}));
  },

  render() {
    this.list.replaceChildren(...this.items.map((item, n) => {
      const drop = el("button", {className: "attachment-remove", attrs: {type: "button",
        "aria-label": `Remove image ${n + 1} (${item.name})`}}, [icon("M6 6l12 12M18 6L6 18")]);
      drop.addEventListener("click", () => this.remove(item));
      return el("li", {className: "attachment"}, [
        el("img", {attrs: {src: item.url, alt: `Image ${n + 1}: ${item.name}`}}), drop]);
    }));
    this.list.hidden = !this.items.length;
  },
};

/** A file's bytes in base64 (the part of its data: URL after the comma). */
function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// ------------------------------------------------------------------ Inbox

/** Every session's pending approvals and questions: the badge, the list, notifications. */
const Inbox = {
  entries: [],
  revision: null,
  known: null, // request ids seen so far (null until the first snapshot)
  count: 0,

  init() {
    $("notify-yes").addEventListener("click", () => Notify.ask());
    $("notify-no").addEventListener("click", () => {
      Notify.dismiss();
      this.render();
    });
  },

  update(snapshot) {
    if (!snapshot || !Array.isArray(snapshot.entries)) return;
    if (this.revision !== null && snapshot.revision === this.revision && snapshot.epoch === this.epoch) return;
    const changed = this.revision !== snapshot.revision;
    this.revision = snapshot.revision;
    this.epoch = snapshot.epoch;
    this.entries = snapshot.entries;
    const fresh = this.known ? this.entries.filter((e) => !this.known.has(e.request_id)) : [];
    this.known = new Set(this.entries.map((e) => e.request_id));
    this.count = this.entries.length;
    this.render();
    Sessions.renderList();
    Sessions.renderHeader();
    if (fresh.length) Notify.announce(fresh);
    // Sessions changed state (a request opened or settled): refresh the list's pills.
    if (changed) Sessions.refresh();
  },

  countBySession() {
    const counts = new Map();
    for (const e of this.entries) counts.set(e.session_id, (counts.get(e.session_id) || 0) + 1);
    return counts;
  },

  render() {
    const n = this.count;
    const badge = $("inbox-count");
    badge.hidden = n === 0;
    badge.textContent = n > 99 ? "99+" : String(n);
    $("inbox-btn").setAttribute("aria-label", n ? `Inbox: ${n} waiting for you` : "Inbox: nothing waiting");
    $("inbox-btn").dataset.count = String(n);
    $("inbox-empty").hidden = n > 0;
    const now = Date.now() / 1000;
    $("inbox-list").replaceChildren(...this.entries.map((e) => {
      const kind = e.kind === "clarify" ? "Question" : "Approval";
      const left = typeof e.expires_at === "number" ? Math.max(0, e.expires_at - now) : null;
      const when = left === null ? relativeTime(e.created_at) : `${relativeTime(e.created_at)} · ${formatDuration(left * 1000)} left`;
      const btn = el("button", {className: "inbox-item", attrs: {type: "button", "data-request-id": e.request_id,
        "data-session-id": e.session_id}}, [
        el("span", {className: `inbox-kind inbox-kind-${e.kind}`, text: kind}),
        el("span", {className: "inbox-summary", text: e.summary || kind}),
        el("span", {className: "inbox-where", text: `${e.session_title || "session"} · ${when}`}),
      ]);
      btn.addEventListener("click", () => Sessions.open(e.session_id, e.request_id));
      return el("li", {}, [btn]);
    }));
    $("notify-ask").hidden = !(n > 0 && Notify.shouldAsk());
  },

  onOpen() {
    this.render();
  },
};

// ------------------------------------------------------------------ Notify

/** Browser notifications: asked for only from a click, never on load; shown only when no
 *  Tether tab is visible, and by one tab (the leader). */
const Notify = {
  supported: typeof window.Notification === "function",
  get permission() {
    return this.supported ? Notification.permission : "unsupported";
  },
  shouldAsk() {
    let dismissed = false;
    try {
      dismissed = localStorage.getItem("tether-notify-dismissed") === "1";
    } catch (err) { /* ignore */ }
    return this.permission === "default" && !dismissed;
  },
  dismiss() {
    try {
      localStorage.setItem("tether-notify-dismissed", "1");
    } catch (err) { /* ignore */ }
  },
  async ask() {
    if (!this.supported) return;
    try {
      await Notification.requestPermission();
    } catch (err) { /* old callback-style API, or refused */ }
    Settings.render();
    Inbox.render();
  },
  announce(entries) {
    if (this.permission !== "granted" || Link.role === "follower" || !document.hidden) return;
    if (Link.role === "leader" && [...Link.tabs.values()].some((t) => t.visible)) return;
    for (const e of entries.slice(0, 3)) {
      try {
        const n = new Notification(e.kind === "clarify" ? "A question for you" : "Approval needed", {
          body: `${e.session_title || "session"}: ${e.summary || ""}`, tag: e.request_id, icon: "/static/icons/icon-192.png",
        });
        n.onclick = () => {
          window.focus();
          Sessions.open(e.session_id, e.request_id);
          n.close();
        };
      } catch (err) {
        console.warn("tether: notification", err);
      }
    }
  },
};

// ------------------------------------------------------------------ Settings

const Settings = {
  init() {
    for (const radio of document.querySelectorAll('input[name="transport"]')) {
      radio.addEventListener("change", () => {
        Prefs.savedTransport = radio.value;
        this.render();
      });
    }
    $("notify-btn").addEventListener("click", () => Notify.ask());
    $("push-btn").addEventListener("click", () => (WebPush.subscribed ? WebPush.disable() : WebPush.enable()));
    $("push-turn-end").addEventListener("change", (e) => WebPush.setTurnEnd(e.target.checked));
    WebPush.init(() => this.render());
    this.render();
  },
  render() {
    const saved = Prefs.savedTransport;
    for (const radio of document.querySelectorAll('input[name="transport"]')) radio.checked = radio.value === saved;
    const url = Prefs.urlTransport;
    const active = Link.conn ? Link.conn.mode : Link.lastStatus && Link.lastStatus.mode;
    const notes = [];
    if (url) notes.push(`This page was opened with ?transport=${url}, which wins over the setting.`);
    if (active && active !== (url || saved)) notes.push("Changes apply when the page is reloaded.");
    else if (!url) notes.push("Applies on the next reload. Tether falls back by itself when a transport fails.");
    $("transport-note").textContent = notes.join(" ");
    const p = Notify.permission;
    $("notify-state").textContent = {granted: "On: you are told when an agent needs you while Tether is in the background.",
      denied: "Blocked in this browser's site settings.", unsupported: "This browser cannot show notifications.",
      default: "Off."}[p];
    $("notify-btn").hidden = p !== "default";
    this.renderPush();
  },
  renderPush() {
    const on = WebPush.subscribed;
    let state = on ? "This device is subscribed: it is told when an agent needs you, even with every Tether tab closed."
      : "This device is not subscribed.";
    if (!WebPush.supported) {
      state = window.isSecureContext ? "This browser cannot receive push notifications."
        : "Push notifications need HTTPS (or localhost).";
    } else if (WebPush.busy) state = "Working…";
    if (WebPush.error) state += ` ${WebPush.error}`;
    $("push-state").textContent = state;
    $("push-btn").textContent = on ? "Stop notifying this device" : "Notify me on this device";
    $("push-btn").hidden = !WebPush.supported;
    $("push-btn").disabled = WebPush.busy;
    $("push-turn-end-label").hidden = !on;
    $("push-turn-end").checked = WebPush.turnEnd;
  },
};

// ------------------------------------------------------------------ start

function start() {
  Markdown.init();
  Transcript.init();
  Composer.init();
  Drawer.init();
  Popovers.init();
  Modes.init();
  Changes.init();
  Attach.init();
  Inbox.init();
  Settings.init();
  Status.listeners.push(() => Sessions.renderState());
  Link.init({
    cursor: () => Transcript.lastId,
    event: (sid, events) => Feeder.ingest(sid, events),
    reset: (sid) => {
      if (sid && sid === Sessions.currentId) {
        Feeder.show(sid, Feeder.handlers);
        Transcript.clear();
        Feeder.fill();
      }
    },
    inbox: (snapshot) => Inbox.update(snapshot),
    gone: (sid) => Sessions.showGone(sid),
    status: (state, mode) => {
      Status.set(state, mode);
      Settings.render();
    },
  });
  const nudge = (reason) => () => Link.nudge(reason);
  window.addEventListener("online", nudge("online"));
  window.addEventListener("offline", () => Link.offline());
  window.addEventListener("focus", nudge("focus"));
  window.addEventListener("pageshow", nudge("pageshow"));
  window.addEventListener("pagehide", () => Link.bye());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) Link.nudge("visible");
    else Link.announce();
  });
  // The first inbox snapshot, directly: a follower tab may wait a moment for its leader.
  Api.inbox().then((snapshot) => { if (Inbox.revision === null) Inbox.update(snapshot); }).catch(() => {});
  Sessions.init();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
