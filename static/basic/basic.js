/* Tether's basic client (README, Browsers): ECMAScript 5 and XMLHttpRequest only, for the
 * browsers the modern client leaves out. No fetch, Promise, EventSource, WebSocket, Web Locks,
 * BroadcastChannel; plain DOM (textContent, never innerHTML with server text).
 *
 * One long-poll at a time: GET /api/sessions/<id>/events?after=<last id>&wait=25&inbox=<rev>
 * for the session shown (the inbox rides along), GET /api/inbox?after=<rev>&wait=25 when none
 * is. Events are applied once each, in id order (an id at or below the cursor is dropped); a
 * `reset` answer, or a new epoch, clears the transcript and replays the log from the start.
 * A reload reads the session from the address (#s=<id>) and replays its log.
 *
 * On `/` (a browser without ES modules runs this as <script nomodule>) it opens the basic page. */
(function () {
  "use strict";

  var root = document.getElementById("basic");
  if (!root) {
    location.replace("/?client=basic" + location.hash);
    return;
  }

  var WAIT = 25; // seconds a long-poll is held (the server allows 50)
  var LIMIT = 500;
  var LABEL = "basic client · tab " + tabId(); // who answered, in the transcript
  var DEFAULT_DENIAL = "The user denied this from Tether.";

  /** This tab's id: kept for the tab's life (a reload keeps it), so its answers stay "you". */
  function tabId() {
    var tab = null;
    try {
      tab = window.sessionStorage.getItem("tether-tab");
      if (!tab) {
        tab = (0x10000 + Math.floor(Math.random() * 0xf0000)).toString(16).slice(1);
        window.sessionStorage.setItem("tether-tab", tab);
      }
    } catch (e) {
      tab = tab || Math.floor(Math.random() * 0x10000).toString(16);
    }
    return tab;
  }

  function $(id) {
    return document.getElementById(id);
  }

  /** An element with text (never parsed as HTML), a class and children. */
  function el(tag, className, text, children) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.appendChild(document.createTextNode(String(text)));
    if (children) {
      for (var i = 0; i < children.length; i++) {
        if (children[i]) node.appendChild(children[i]);
      }
    }
    return node;
  }

  function button(text, className, onClick) {
    var b = el("button", className, text);
    b.type = "button";
    b.onclick = onClick;
    return b;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function show(node, visible) {
    if (visible) node.removeAttribute("hidden");
    else node.setAttribute("hidden", "");
  }

  function stringify(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "string") return value;
    try {
      return JSON.stringify(value, null, 2);
    } catch (e) {
      return String(value);
    }
  }

  function keys(object) {
    var out = [];
    for (var k in object) {
      if (Object.prototype.hasOwnProperty.call(object, k)) out.push(k);
    }
    return out;
  }

  // ---------------------------------------------------------------- HTTP

  /** One JSON request; done(status, body) once (status 0: no answer, or timed out). */
  function request(method, path, body, timeoutMs, done) {
    var xhr = new XMLHttpRequest();
    var finished = false;
    var timer = null;
    function finish(status, data) {
      if (finished) return;
      finished = true;
      if (timer) clearTimeout(timer);
      done(status, data);
    }
    xhr.open(method, path, true);
    xhr.setRequestHeader("Accept", "application/json");
    if (body !== null) xhr.setRequestHeader("Content-Type", "application/json");
    xhr.onreadystatechange = function () {
      if (xhr.readyState !== 4) return;
      var data = null;
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch (e) {
        data = null;
      }
      if (xhr.status === 401) return signedOut();
      finish(xhr.status, data);
    };
    if (timeoutMs) {
      timer = setTimeout(function () {
        finish(0, null);
        xhr.abort();
      }, timeoutMs);
    }
    xhr.send(body === null ? null : JSON.stringify(body));
    return xhr;
  }

  function errorText(status, data) {
    if (data && data.error && data.error.message) return data.error.message;
    return status ? "the server answered " + status : "no answer from the server";
  }

  function sessionPath(sid, tail) {
    return "/api/sessions/" + encodeURIComponent(sid) + (tail || "");
  }

  var signedOutOnce = false;
  function signedOut() {
    // The login has ended: the page itself now answers with the login form.
    if (signedOutOnce) return;
    signedOutOnce = true;
    location.reload();
  }

  // ---------------------------------------------------------------- state

  var state = {
    sid: null,
    cursor: 0, // the last event id applied
    epoch: null,
    turnActive: false,
    streaming: null, // the agent's message being streamed (text_delta)
    tools: {}, // tool_use_id -> its list item
    cards: {}, // request_id -> its card
    inboxRev: null,
    sessions: []
  };

  // ---------------------------------------------------------------- sessions

  function loadAgents() {
    request("GET", "/api/agents", null, 15000, function (status, data) {
      var select = $("agent");
      clear(select);
      var agents = data && data.agents ? data.agents : [];
      var preferred = root.getAttribute("data-default-agent");
      for (var i = 0; i < agents.length; i++) {
        var option = el("option", null, agents[i].name + (agents[i].available ? "" : " (not available)"));
        option.value = agents[i].name;
        option.disabled = !agents[i].available;
        if (agents[i].name === preferred) option.selected = true;
        select.appendChild(option);
      }
    });
  }

  function loadSessions() {
    request("GET", "/api/sessions", null, 15000, function (status, data) {
      if (status !== 200 || !data) return;
      state.sessions = data.sessions || [];
      for (var i = 0; i < state.sessions.length; i++) {
        if (state.sessions[i].id === state.sid) showTitle(state.sessions[i].title);
      }
      renderSessions();
    });
  }

  function showTitle(title) {
    $("session-title").textContent = title || "Transcript";
    $("title").textContent = title || "Tether";
  }

  function renderSessions() {
    var list = $("session-list");
    clear(list);
    for (var i = 0; i < state.sessions.length; i++) {
      var s = state.sessions[i];
      var link = el("a", null, s.title || s.id);
      link.href = "#s=" + s.id;
      if (s.id === state.sid) link.setAttribute("aria-current", "page");
      list.appendChild(el("li", s.id === state.sid ? "current" : null, null,
        [link, el("span", "meta", " " + s.agent + " · " + s.state)]));
    }
    show($("session-empty"), state.sessions.length === 0);
  }

  function newSession(event) {
    if (event) event.preventDefault();
    var agent = $("agent").value;
    $("new-btn").disabled = true;
    request("POST", "/api/sessions", agent ? {agent: agent} : {}, 30000, function (status, data) {
      $("new-btn").disabled = false;
      if (status !== 201 || !data) return alertError("Could not start a session: " + errorText(status, data));
      state.sessions.unshift(data);
      location.hash = "#s=" + data.id; // opens it (hashchange)
    });
  }

  /** Show the session the address names (#s=<id>, as in the full client), or none. */
  function route() {
    var match = /^#s=([0-9A-Za-z_-]+)$/.exec(location.hash);
    var sid = match ? match[1] : null;
    if (sid === state.sid) return;
    state.sid = sid;
    resetTranscript();
    state.epoch = null;
    show($("session"), !!sid);
    // The list folds away while a session is shown (a browser without <details> keeps it open).
    if (sid) $("sessions").removeAttribute("open");
    else $("sessions").setAttribute("open", "");
    $("session-title").textContent = "Transcript";
    renderSessions();
    if (sid) {
      request("GET", sessionPath(sid), null, 15000, function (status, data) {
        if (sid !== state.sid || status !== 200 || !data) return;
        showTitle(data.title);
      });
    } else {
      $("title").textContent = "Tether";
    }
    restartPoll();
  }

  // ---------------------------------------------------------------- transcript

  function resetTranscript() {
    clear($("transcript"));
    state.cursor = 0;
    state.streaming = null;
    state.tools = {};
    state.cards = {};
    state.turnActive = false;
    updateComposer();
  }

  function add(node, event) {
    node.setAttribute("data-event-id", String(event.id));
    node.setAttribute("data-kind", event.kind);
    $("transcript").appendChild(node);
    return node;
  }

  function endStreaming() {
    state.streaming = null;
  }

  function by(who) {
    if (!who) return "";
    return who === LABEL ? "you" : who;
  }

  /** The text of a tool result's content: a string, or blocks of text. */
  function contentText(content) {
    if (typeof content === "string") return content;
    if (content && typeof content.length === "number") {
      var parts = [];
      for (var i = 0; i < content.length; i++) {
        var block = content[i];
        if (block && typeof block.text === "string") parts.push(block.text);
        else if (block && block.type === "image") parts.push("[image]");
        else parts.push(stringify(block));
      }
      return parts.join("\n");
    }
    return stringify(content);
  }

  function inputText(name, input) {
    if (input && name === "Bash" && typeof input.command === "string") return "$ " + input.command;
    return stringify(input);
  }

  var render = {
    user: function (event) {
      endStreaming();
      state.turnActive = true;
      add(el("li", "msg user", null, [el("span", "who", "You: "), el("span", "text", event.text)]), event);
    },
    agent_session: function (event) {
      var model = event.model && event.model !== event.agent ? " · " + event.model : "";
      $("state").setAttribute("data-agent", event.agent + model);
    },
    text_delta: function (event) {
      if (!state.streaming) {
        state.streaming = add(el("li", "msg agent", null, [el("span", "who", "Agent: "), el("span", "text", "")]), event);
      }
      state.streaming.lastChild.appendChild(document.createTextNode(event.text));
    },
    text: function (event) {
      // The full text of the block whose deltas just streamed: it replaces them.
      var item = state.streaming;
      if (!item) item = add(el("li", "msg agent", null, [el("span", "who", "Agent: "), el("span", "text", "")]), event);
      item.setAttribute("data-event-id", String(event.id));
      item.setAttribute("data-kind", "text");
      item.lastChild.textContent = event.text || "";
      if (event.command_output) item.className += " pre";
      endStreaming();
    },
    thinking: function (event) {
      endStreaming();
      add(el("li", "thinking", null, [el("span", "who", "Thinking: "), el("span", "text", event.text)]), event);
    },
    plan: function (event) {
      // The whole plan each time (ACP): shown as a list, one line per entry.
      endStreaming();
      var entries = event.entries || [];
      var lines = [];
      for (var i = 0; i < entries.length; i++) {
        var mark = entries[i].status === "completed" ? "[x] " : entries[i].status === "in_progress" ? "[>] " : "[ ] ";
        lines.push(mark + (entries[i].content || ""));
      }
      add(el("li", "thinking", null, [el("span", "who", "Plan: "), el("pre", "tool-input", lines.join("\n"))]), event);
    },
    tool_use: function (event) {
      endStreaming();
      var item = add(el("li", "tool", null, [
        el("p", "tool-name", "Tool: " + (event.name || "tool")),
        // A question's input is its card (below), shown once.
        event.name === "AskUserQuestion" ? null : el("pre", "tool-input", inputText(event.name, event.input))
      ]), event);
      state.tools[event.tool_use_id] = item;
    },
    tool_result: function (event) {
      var item = state.tools[event.tool_use_id];
      var text = contentText(event.content);
      // The agent's words for a person's Stop (docs/protocol.md): not a failure.
      var stopped = text.indexOf("[Request interrupted by user") === 0;
      var out = el("pre", "tool-output" + (event.is_error && !stopped ? " is-error" : ""), text);
      var head = el("p", "tool-result", stopped ? "Stopped:" : event.is_error ? "Error:" : "Output:");
      if (item) {
        item.appendChild(head);
        item.appendChild(out);
      } else {
        add(el("li", "tool", null, [head, out]), event);
      }
    },
    approval_request: function (event) {
      endStreaming();
      placeCard(approvalCard(event), event);
    },
    approval_resolved: function (event) {
      resolved(event);
    },
    clarify_request: function (event) {
      endStreaming();
      placeCard(clarifyCard(event), event);
    },
    clarify_resolved: function (event) {
      resolved(event);
    },
    result: function (event) {
      endStreaming();
      if (event.stopped) return; // the turn_end says it: "Stopped by you"
      var parts = [event.is_error ? "Error" : "Done"];
      if (typeof event.duration_ms === "number") parts.push((event.duration_ms / 1000).toFixed(1) + " s");
      if (typeof event.cost_usd === "number" && event.cost_usd > 0) parts.push("$" + event.cost_usd.toFixed(4));
      var line = el("li", "result" + (event.is_error ? " is-error" : ""), parts.join(" · "));
      if (event.is_error && event.text) line.appendChild(el("span", "text", " " + event.text));
      add(line, event);
    },
    error: function (event) {
      endStreaming();
      add(el("li", "notice is-error", "Error: " + (event.message || "unknown error")), event);
    },
    turn_end: function (event) {
      endStreaming();
      state.turnActive = false;
      var labels = {cancelled: "Stopped by you", timeout: "Timed out", error: "Ended by an error",
        interrupted: "Interrupted: the server restarted"};
      add(el("li", "turn-end", labels[event.reason] || "Turn done"), event);
      loadSessions();
    },
    context_cleared: function (event) {
      endStreaming();
      add(el("li", "notice", "Context cleared: the agent starts afresh"), event);
    },
    prompt_queued: function (event) {
      add(el("li", "notice", "Queued: " + (event.text || "")), event);
    }
  };

  /** Apply one event, once: ids only grow, so one at or below the cursor was applied. */
  function apply(event) {
    if (typeof event.id !== "number" || event.id <= state.cursor) return;
    state.cursor = event.id;
    var fn = render[event.kind];
    if (fn) {
      try {
        fn(event);
      } catch (err) {
        if (window.console) console.error("tether: cannot show event", event, err);
      }
    }
  }

  // ---------------------------------------------------------------- cards

  function placeCard(card, event) {
    card.setAttribute("data-request-id", event.request_id);
    state.cards[event.request_id] = card;
    var tool = event.tool_use_id && state.tools[event.tool_use_id];
    if (tool) {
      card.setAttribute("data-event-id", String(event.id));
      card.setAttribute("data-kind", event.kind);
      tool.appendChild(card);
    } else {
      add(el("li", "card-item", null, [card]), event);
    }
  }

  function cardShell(kicker, title) {
    var card = el("div", "card", null, [el("p", "kicker", kicker), title ? el("p", "card-title", title) : null]);
    card.setAttribute("data-state", "pending");
    card.setAttribute("role", "group");
    card.setAttribute("aria-label", title ? kicker + ": " + title : kicker);
    return card;
  }

  function setOutcome(card, text, cardState) {
    var outcome = card.outcome;
    if (!outcome) {
      outcome = card.outcome = el("p", "outcome", "");
      card.appendChild(outcome);
    }
    outcome.textContent = text;
    if (cardState) card.setAttribute("data-state", cardState);
  }

  function disableCard(card, disabled) {
    var controls = card.getElementsByTagName("*");
    for (var i = 0; i < controls.length; i++) {
      var tag = controls[i].tagName;
      if (tag === "BUTTON" || tag === "INPUT" || tag === "TEXTAREA") controls[i].disabled = disabled;
    }
  }

  /** Send an answer; the card settles when its *_resolved event arrives. */
  function answer(card, path, body) {
    var sid = state.sid;
    disableCard(card, true);
    setOutcome(card, "Sending…");
    request("POST", path, body, 30000, function (status, data) {
      if (sid !== state.sid || card.getAttribute("data-state") !== "pending") return;
      if (status === 200) return setOutcome(card, "Sent: waiting for the agent…");
      if (status === 409) return setOutcome(card, "Already answered.");
      disableCard(card, false);
      setOutcome(card, "Not sent: " + errorText(status, data));
    });
  }

  function approvalCard(event) {
    var name = event.tool_name || "tool";
    var card = cardShell("Needs your approval", "Allow " + name + "?");
    card.className += " approval";
    if (!(event.tool_use_id && state.tools[event.tool_use_id])) {
      card.appendChild(el("pre", "tool-input", inputText(name, event.input)));
    }
    var message = el("input", "message");
    message.type = "text";
    message.maxLength = 2000;
    message.placeholder = "Message for the agent (optional)";
    message.setAttribute("aria-label", "Message with your answer to " + name);
    var path = sessionPath(state.sid, "/approvals/" + encodeURIComponent(event.request_id));
    function send(decision, optionId) {
      var body = {decision: decision, client: LABEL};
      var text = message.value.replace(/^\s+|\s+$/g, "");
      if (text) body.message = text;
      if (optionId) body.option_id = optionId;
      answer(card, path, body);
    }
    if (event.reason) card.appendChild(el("p", "desc", String(event.reason)));
    if (event.diff) card.appendChild(el("pre", "tool-input", String(event.diff)));
    card.appendChild(el("div", "actions", null, [message, el("div", "buttons", null,
      optionButtons(event.options, send) || [
        button("Allow", "allow", function () { send("allow"); }),
        button("Deny", "deny", function () { send("deny"); })
      ])]));
    return card;
  }

  /** The agent's own choices as buttons (Codex's decisions, an ACP agent's permission
   *  options), or null when it sent none. */
  function optionButtons(options, send) {
    var buttons = [];
    for (var i = 0; options && i < options.length; i++) {
      var option = options[i];
      if (!option || typeof option.option_id !== "string") continue;
      var deny = String(option.kind || "").indexOf("reject") === 0;
      buttons.push(optionButton(option, deny, send));
    }
    return buttons.length ? buttons : null;
  }

  function optionButton(option, deny, send) {
    return button(option.label || option.option_id, deny ? "deny" : "allow", function () {
      send(deny ? "deny" : "allow", option.option_id);
    });
  }

  function clarifyCard(event) {
    var questions = event.questions || [];
    var card = cardShell("The agent asks", null);
    card.className += " clarify";
    var actions = el("div", "actions");
    var fields = [];
    for (var q = 0; q < questions.length; q++) {
      var question = questions[q];
      var group = el("fieldset", "question");
      group.appendChild(el("legend", null, question.question));
      var options = question.options || [];
      var inputs = [];
      for (var o = 0; o < options.length; o++) {
        var input = el("input");
        input.type = question.multi_select ? "checkbox" : "radio";
        input.name = event.request_id + "-" + q;
        input.value = options[o].label;
        var label = el("label", "option", null, [input, el("span", null, " " + options[o].label)]);
        if (options[o].description) label.appendChild(el("span", "desc", " " + options[o].description));
        group.appendChild(label);
        inputs.push(input);
      }
      var other = el("input", "other");
      other.type = "text";
      other.placeholder = "Or your own answer";
      other.setAttribute("aria-label", "Your own answer to: " + question.question);
      group.appendChild(other);
      actions.appendChild(group);
      fields.push({question: question.question, inputs: inputs, other: other});
    }
    var path = sessionPath(state.sid, "/clarify/" + encodeURIComponent(event.request_id));
    card.appendChild(actions);
    actions.appendChild(el("div", "buttons", null, [button("Answer", "primary", function () {
      var answers = {};
      var any = false;
      for (var f = 0; f < fields.length; f++) {
        var own = fields[f].other.value.replace(/^\s+|\s+$/g, "");
        var picked = [];
        for (var i = 0; i < fields[f].inputs.length; i++) {
          if (fields[f].inputs[i].checked) picked.push(fields[f].inputs[i].value);
        }
        if (own) picked.push(own);
        if (picked.length) {
          answers[fields[f].question] = picked.join(", ");
          any = true;
        }
      }
      if (!any) return setOutcome(card, "Pick an answer or write one.");
      answer(card, path, {answers: answers, client: LABEL});
    })]));
    return card;
  }

  function resolved(event) {
    var card = state.cards[event.request_id];
    if (!card) return;
    var who = by(event.by);
    var text;
    var cardState;
    if (event.kind === "approval_resolved") {
      if (event.reason === "timeout") text = "Denied: nobody answered in time";
      else if (event.reason === "cancelled") text = "Cancelled: the turn ended";
      else if (event.decision === "allow") text = event.reason === "auto" ? "Allowed by auto-approve" : "Allowed by " + who;
      else text = "Denied by " + who + (event.message && event.message !== DEFAULT_DENIAL ? ": " + event.message : "");
      cardState = event.decision === "allow" ? "allowed" : "denied";
    } else {
      var answers = event.answers || {};
      var list = keys(answers);
      var parts = [];
      for (var i = 0; i < list.length; i++) parts.push(list[i] + " → " + answers[list[i]]);
      if (event.reason === "timeout") text = "Unanswered: nobody answered in time";
      else if (event.reason === "cancelled") text = "Cancelled: the turn ended";
      else text = "Answered by " + who + (parts.length ? ": " + parts.join("; ") : "");
      cardState = list.length ? "answered" : "unanswered";
    }
    // Settled: the outcome replaces the controls (the fieldsets keep the questions).
    var actions = card.lastChild && card.lastChild.className === "outcome" ? card.lastChild.previousSibling : card.lastChild;
    if (actions && actions.className === "actions") {
      var drop = [];
      for (var n = actions.firstChild; n; n = n.nextSibling) {
        if (n.tagName !== "FIELDSET") drop.push(n);
      }
      for (var d = 0; d < drop.length; d++) actions.removeChild(drop[d]);
    }
    disableCard(card, true);
    setOutcome(card, text, cardState);
  }

  // ---------------------------------------------------------------- composer

  function updateComposer() {
    $("stop-btn").disabled = !state.turnActive;
    $("state").textContent = state.sid ? (state.turnActive ? "Working…" : "Idle") + " ·" : "";
  }

  function alertError(text) {
    var box = $("composer-error");
    box.textContent = text || "";
    show(box, !!text);
  }

  function sendPrompt(event) {
    if (event) event.preventDefault();
    var text = $("prompt").value;
    if (!state.sid || !text.replace(/\s+/g, "")) return;
    var sid = state.sid;
    $("send-btn").disabled = true;
    alertError("");
    request("POST", sessionPath(sid, "/prompt"), {text: text}, 30000, function (status, data) {
      $("send-btn").disabled = false;
      if (status === 202) {
        if (sid === state.sid) $("prompt").value = "";
        return;
      }
      if (status === 409) return alertError("The agent is still working: wait for it, or Stop it.");
      alertError("Not sent: " + errorText(status, data));
    });
  }

  function stopTurn() {
    if (!state.sid) return;
    $("stop-btn").disabled = true;
    request("POST", sessionPath(state.sid, "/cancel"), {}, 30000, function (status, data) {
      if (status !== 200) {
        updateComposer();
        alertError("Could not stop: " + errorText(status, data));
      }
    });
  }

  // ---------------------------------------------------------------- inbox

  function takeInbox(snapshot) {
    if (!snapshot || typeof snapshot.revision !== "number") return;
    var changed = state.inboxRev !== null && snapshot.revision !== state.inboxRev;
    state.inboxRev = snapshot.revision;
    var entries = snapshot.entries || [];
    var btn = $("inbox-btn");
    btn.textContent = "Inbox: " + entries.length;
    btn.className = entries.length ? "waiting" : "";
    var list = $("inbox-list");
    clear(list);
    for (var i = 0; i < entries.length; i++) {
      var entry = entries[i];
      var link = el("a", null, (entry.session_title || entry.session_id) + ": " + (entry.summary || entry.kind));
      link.href = "#s=" + entry.session_id;
      list.appendChild(el("li", null, null, [link]));
    }
    show($("inbox-empty"), entries.length === 0);
    if (changed) loadSessions(); // states and titles change with the inbox
  }

  function toggleInbox() {
    var panel = $("inbox");
    var open = panel.hasAttribute("hidden");
    show(panel, open);
    $("inbox-btn").setAttribute("aria-expanded", open ? "true" : "false");
  }

  /** True when the page is scrolled to (near) its end: new events keep it there. */
  function atBottom() {
    var doc = document.documentElement;
    var top = window.pageYOffset || doc.scrollTop || 0;
    return top + (window.innerHeight || doc.clientHeight) >= doc.scrollHeight - 120;
  }

  // ---------------------------------------------------------------- the long-poll

  var poll = {xhr: null, gen: 0, fails: 0, timer: null};

  function setConn(text) {
    $("conn").textContent = text;
  }

  function restartPoll() {
    poll.gen += 1;
    if (poll.timer) clearTimeout(poll.timer);
    poll.timer = null;
    var xhr = poll.xhr;
    poll.xhr = null;
    if (xhr) xhr.abort();
    pollNext(0);
  }

  function retryLater(gen) {
    poll.fails += 1;
    setConn("Reconnecting…");
    var delay = Math.min(30000, 500 * Math.pow(2, Math.min(poll.fails, 6))) * (0.75 + Math.random() * 0.5);
    poll.timer = setTimeout(function () {
      poll.timer = null;
      if (gen === poll.gen) pollNext(0);
    }, delay);
  }

  function pollNext(wait) {
    var gen = poll.gen;
    var sid = state.sid;
    var url;
    if (sid) {
      url = sessionPath(sid, "/events") + "?after=" + state.cursor + "&wait=" + wait + "&limit=" + LIMIT
        + "&inbox=" + (state.inboxRev === null ? 0 : state.inboxRev);
    } else {
      url = "/api/inbox" + (state.inboxRev === null ? "" : "?after=" + state.inboxRev + "&wait=" + wait);
    }
    poll.xhr = request("GET", url, null, (wait + 15) * 1000, function (status, data) {
      if (gen !== poll.gen) return; // another session is shown now
      poll.xhr = null;
      if (sid && status === 404) {
        alertError("This session no longer exists.");
        location.hash = "";
        return;
      }
      if (status !== 200 || !data) return retryLater(gen);
      poll.fails = 0;
      setConn("Connected (long-poll)");
      if (!sid) {
        takeInbox(data);
        return pollNext(WAIT);
      }
      if (data.inbox) takeInbox(data.inbox);
      var epochChanged = state.epoch !== null && data.epoch && data.epoch !== state.epoch;
      if (data.epoch) state.epoch = data.epoch;
      if (data.reset || epochChanged || data.last_event_id < state.cursor) {
        // The ids restarted (a new server without its store): the log again, from the start.
        resetTranscript();
        if (!data.reset) return pollNext(0);
      }
      var events = data.events || [];
      var pinned = atBottom();
      for (var i = 0; i < events.length; i++) apply(events[i]);
      if (pinned && events.length) window.scrollTo(0, document.documentElement.scrollHeight);
      state.turnActive = !!data.turn_active;
      updateComposer();
      pollNext(events.length >= LIMIT ? 0 : WAIT);
    });
  }

  // ---------------------------------------------------------------- start

  function start() {
    var why = /[?&]why=([^&#]*)/.exec(location.search);
    if (why) {
      var reason = decodeURIComponent(why[1]);
      $("why").textContent = "This browser lacks what the full client needs (" + reason
        + "): this is the basic client.";
      show($("why"), true);
    }
    $("new-session").onsubmit = newSession;
    $("composer").onsubmit = sendPrompt;
    $("stop-btn").onclick = stopTurn;
    $("inbox-btn").onclick = toggleInbox;
    $("prompt").onkeydown = function (event) {
      // Enter sends, Shift+Enter is a new line (as in the full client).
      if ((event.keyCode === 13 || event.key === "Enter") && !event.shiftKey) sendPrompt(event);
    };
    window.onhashchange = route;
    loadAgents();
    loadSessions();
    state.sid = undefined; // route() shows whatever the address names, even none
    route();
  }

  start();
})();
