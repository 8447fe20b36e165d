/* Tether browser UI, part 4 of 5: the Changes panel.
 *
 * What the session's agent changed in its folder (GET /api/sessions/<id>/changes): each file
 * with its status and line counts, folded; unfolded, its unified diff with old and new line
 * numbers, wrapped so that the page never scrolls sideways on a phone. Any file of the folder
 * opens read-only. While the panel is open it refreshes after every tool result and at every
 * turn's end. Everything from the server is put in with textContent.
 */
"use strict";

/** Lines of a diff or a file drawn at most; the rest is counted, not drawn. */
const MAX_DRAWN_LINES = 4000;

const Changes = {
  sessionId: null,
  timer: null,
  unfolded: new Set(), // paths whose diff is shown

  init() {
    $("changes-btn").addEventListener("click", () => this.show());
    $("changes-close").addEventListener("click", () => $("changes").close());
    $("changes-refresh").addEventListener("click", () => this.load());
    $("changes").addEventListener("close", () => {
      this.sessionId = null;
      clearTimeout(this.timer);
      $("changes-btn").focus();
    });
    $("changes-open").addEventListener("submit", (e) => {
      e.preventDefault();
      const path = $("changes-path").value.trim().replace(/^\.?\/+/, "");
      if (!path) return;
      // A URL path cannot carry "..": the browser would apply it before the server sees it.
      if (path.split("/").some((part) => part === ".." || part === ".")) {
        this.fileNote(`${path} is not inside the session's folder: name a path in it, without "..".`);
        return;
      }
      this.openFile(path);
    });
  },

  /** The header button follows the shown session. */
  follow(id) {
    $("changes-btn").hidden = !id;
    if (this.sessionId && this.sessionId !== id) $("changes").close();
  },

  show() {
    Popovers.closeAll();
    const id = Sessions.currentId;
    if (!id) return;
    this.sessionId = id;
    this.unfolded.clear();
    $("changes-list").replaceChildren();
    $("changes-note").textContent = "Reading the changes…";
    $("changes").showModal();
    this.load();
  },

  /** A live event of the shown session: a tool result or a turn's end may change files. */
  noteEvent(event) {
    if (!this.sessionId || event.session_id !== this.sessionId) return;
    if (event.kind !== "tool_result" && event.kind !== "turn_end") return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 400);
  },

  async load() {
    const id = this.sessionId;
    if (!id) return;
    let data;
    try {
      data = await Api.changes(id);
    } catch (err) {
      if (id === this.sessionId) $("changes-note").textContent = `Could not read the changes: ${err.message}`;
      return;
    }
    if (id !== this.sessionId) return;
    const count = data.files.length;
    const what = count ? `${count}${data.truncated ? "+" : ""} file${count === 1 ? "" : "s"} changed` : "No changes yet";
    $("changes-note").textContent = data.git
      ? `${what}, against ${data.base.slice(0, 8)}: the commit when the session started.${data.truncated ? " Only the first 1,000 are listed." : ""}`
      : `${what}: the files the agent wrote (this folder is not a git repository).`;
    $("changes-list").replaceChildren(...data.files.map((file) => this.row(file)));
  },

  row(file) {
    const summary = el("summary", {className: "change-summary"}, [
      el("span", {className: `change-status change-${file.status}`, text: file.status}),
      el("span", {className: "change-path", text: file.old_path ? `${file.old_path} → ${file.path}` : file.path}),
      file.status === "binary" ? null : el("span", {className: "change-counts"}, [
        el("span", {className: "change-add", text: `+${file.additions}`}),
        el("span", {className: "change-del", text: `−${file.deletions}`}),
      ]),
    ]);
    const body = el("div", {className: "change-body"});
    const details = el("details", {className: "change"}, [summary, body]);
    details.addEventListener("toggle", () => {
      if (details.open) {
        this.unfolded.add(file.path);
        this.drawDiff(file, body);
      } else {
        this.unfolded.delete(file.path);
      }
    });
    if (this.unfolded.has(file.path)) details.open = true;
    return el("li", {}, [details]);
  },

  async drawDiff(file, body) {
    const id = this.sessionId;
    body.replaceChildren(el("p", {className: "change-note", text: "Loading the diff…"}));
    let diff;
    try {
      diff = await Api.fileDiff(id, file.path);
    } catch (err) {
      body.replaceChildren(el("p", {className: "change-note", text: `No diff: ${err.message}`}));
      return;
    }
    if (id !== this.sessionId) return;
    const parts = [];
    if (diff.binary) parts.push(el("p", {className: "change-note", text: "A binary file: no text diff."}));
    else parts.push(diffLines(diff.diff));
    if (diff.truncated) parts.push(el("p", {className: "change-note", text: "The diff is cut at 1 MiB."}));
    if (file.status !== "deleted") {
      const open = el("button", {className: "btn btn-small", text: "View the whole file", attrs: {type: "button"}});
      open.addEventListener("click", () => this.openFile(file.path));
      parts.push(el("div", {className: "btn-row"}, [open]));
    }
    body.replaceChildren(...parts);
  },

  /** The file view's place at the top of the list, holding ``text`` for now. */
  fileNote(text) {
    const box = el("li", {className: "file-view"}, [el("p", {className: "change-note", text})]);
    const old = $("changes-list").querySelector(".file-view");
    if (old) old.remove();
    $("changes-list").prepend(box);
    return box;
  },

  /** A file of the folder, read-only, at the top of the list. */
  async openFile(path) {
    const id = this.sessionId;
    const box = this.fileNote(`Opening ${path}…`);
    let view;
    try {
      view = await Api.file(id, path);
    } catch (err) {
      box.replaceChildren(el("p", {className: "change-note", text: `Could not open ${path}: ${err.message}`}));
      return;
    }
    if (id !== this.sessionId) return;
    const close = el("button", {className: "icon-btn", attrs: {type: "button", "aria-label": `Close ${view.path}`}},
      [icon("M6 6l12 12M18 6L6 18")]);
    close.addEventListener("click", () => box.remove());
    const head = el("div", {className: "file-head"}, [
      el("span", {className: "change-path", text: view.path}),
      el("span", {className: "change-note", text: `${view.size.toLocaleString()} bytes`}), close]);
    const parts = [head];
    if (view.binary) parts.push(el("p", {className: "change-note", text: "A binary file: not shown."}));
    else parts.push(fileLines(view.text));
    if (view.truncated) parts.push(el("p", {className: "change-note", text: "Only its first 1 MiB is shown."}));
    box.replaceChildren(...parts);
    box.scrollIntoView({block: "nearest"});
  },
};

/** One row of a diff or a file view: old and new line numbers (either may be blank), text. */
function codeRow(kind, oldNo, newNo, text) {
  return el("div", {className: `code-row code-${kind}`}, [
    el("span", {className: "code-no", text: oldNo === null ? "" : String(oldNo), attrs: {"aria-hidden": "true"}}),
    el("span", {className: "code-no", text: newNo === null ? "" : String(newNo), attrs: {"aria-hidden": "true"}}),
    el("span", {className: "code-text", text}),
  ]);
}

/** A unified diff as rows: hunk headers, added, removed and unchanged lines, numbered. */
function diffLines(text) {
  const box = el("div", {className: "code code-diff", attrs: {role: "group", "aria-label": "Diff"}});
  let oldNo = 0;
  let newNo = 0;
  let drawn = 0;
  const lines = text.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  for (const line of lines) {
    if (drawn >= MAX_DRAWN_LINES) break;
    const hunk = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(line);
    if (hunk) {
      oldNo = Number(hunk[1]);
      newNo = Number(hunk[2]);
      box.append(codeRow("hunk", null, null, line));
    } else if (/^(diff --git|index |--- |\+\+\+ |new file mode|deleted file mode|similarity index|rename (from|to) |old mode|new mode)/.test(line)) {
      continue; // the file's own header: the row above says it
    } else if (line.startsWith("+")) {
      box.append(codeRow("add", null, newNo++, line));
    } else if (line.startsWith("-")) {
      box.append(codeRow("del", oldNo++, null, line));
    } else if (line.startsWith("\\")) {
      box.append(codeRow("meta", null, null, line));
    } else {
      box.append(codeRow("same", oldNo++, newNo++, line));
    }
    drawn++;
  }
  if (lines.length > drawn && drawn >= MAX_DRAWN_LINES) {
    box.append(el("p", {className: "change-note", text: `${(lines.length - drawn).toLocaleString()} more lines not drawn.`}));
  }
  return box;
}

function fileLines(text) {
  const box = el("div", {className: "code code-file", attrs: {role: "group", "aria-label": "File"}});
  const lines = text.split("\n");
  if (lines.length > 1 && lines[lines.length - 1] === "") lines.pop();
  lines.slice(0, MAX_DRAWN_LINES).forEach((line, i) => box.append(codeRow("same", null, i + 1, line)));
  if (lines.length > MAX_DRAWN_LINES) {
    box.append(el("p", {className: "change-note", text: `${(lines.length - MAX_DRAWN_LINES).toLocaleString()} more lines not drawn.`}));
  }
  return box;
}
