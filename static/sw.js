/* Tether's service worker, served at /sw.js with scope "/" (blueprints/shell.py; Web Push:
 * docs/protocol.md, "Web Push").
 *
 * The offline shell. At install it keeps SHELL_FILES (the page's styles, scripts and icons,
 * and the offline page), fetched without credentials, in a cache named after SHELL_VERSION,
 * a hash of their content: the server fills both in, so a release that changes any of them
 * is a new sw.js, a new worker and a new cache, and the old cache is deleted when the new
 * worker takes over. That cache is the only one it writes, and it writes it only then.
 * - A page (a navigation) always comes from the network; when it cannot be fetched (or a
 *   proxy says Tether behind it is down), the answer is the kept offline page, at the same
 *   URL, which reloads it once the server answers again: never the browser's error page.
 *   The page itself is never kept: it needs the login.
 * - A shell file comes from the network too, as if the worker were not here, and from the
 *   cache only when the network fails: a release is never half old, half new.
 * - Everything else (the API, streams, the WebSocket, /sw.js, anything sent with a token)
 *   is not touched: it goes to the network and is never kept.
 *
 * Web Push. It shows a notification for each push: an approval (with Allow and Deny), a
 * question, a finished turn; a "resolved" push closes the request's notification on this
 * device. Allow and Deny answer through the same API the page uses, with the login cookie;
 * the first answer wins, and a 409 turns the notification into "Answered elsewhere". A tap
 * opens the session. */
"use strict";

const SHELL_VERSION = "__SHELL_VERSION__";
const SHELL_FILES = ["__SHELL_FILES__"];
const OFFLINE_PAGE = "/offline";
const CACHE_PREFIX = "tether-shell-";
const CACHE = CACHE_PREFIX + SHELL_VERSION;
const ICON = "/static/icons/icon-192.png";

/** Keeps the shell. Fetched past the HTTP cache, so that what is kept is this version's. */
async function keepShell() {
  const cache = await caches.open(CACHE);
  await cache.addAll(SHELL_FILES.map((url) => new Request(url, {credentials: "omit",
                                                                cache: "reload"})));
}

/** Deletes the caches of other versions (and only Tether's own). */
async function dropOldShells() {
  for (const name of await caches.keys()) {
    if (name.startsWith(CACHE_PREFIX) && name !== CACHE) await caches.delete(name);
  }
}

self.addEventListener("install", (event) => {
  event.waitUntil(keepShell().then(() => self.skipWaiting()));
});

/* Navigation preload: the browser asks for a page while this worker starts, rather than
 * after, so that passing through it costs a page no time. */
async function preloadPages() {
  if (self.registration.navigationPreload) await self.registration.navigationPreload.enable();
}

self.addEventListener("activate", (event) => {
  event.waitUntil(Promise.all([dropOldShells(), preloadPages()])
    .then(() => self.clients.claim()));
});

/* What a reverse proxy (deploy/nginx.conf) answers while Tether behind it is down. */
const GATEWAY_DOWN = new Set([502, 504]);

/** A page from the network; the offline page when the network or the server is down. */
async function navigate(event) {
  let response = null;
  try {
    response = (await event.preloadResponse) || await fetch(event.request);
  } catch (err) {
    response = null;
  }
  if (response && !GATEWAY_DOWN.has(response.status)) return response;
  return (await caches.match(OFFLINE_PAGE, {cacheName: CACHE})) || response || Response.error();
}

/** A shell file from the network; the kept copy when the network fails. */
async function shellFile(request) {
  try {
    return await fetch(request);
  } catch (err) {
    const kept = await caches.match(request.url, {cacheName: CACHE});
    if (kept) return kept;
    throw err;
  }
}

const SHELL_URLS = new Set(SHELL_FILES.map((url) => new URL(url, self.location.origin).href));

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || request.headers.has("Authorization")) return;
  if (new URL(request.url).origin !== self.location.origin) return;
  if (request.mode === "navigate") event.respondWith(navigate(event));
  else if (SHELL_URLS.has(request.url)) event.respondWith(shellFile(request));
});

function tagOf(data) {
  return data.request_id ? `tether-${data.request_id}` : `tether-turn-${data.session_id}`;
}

async function notificationsFor(requestId) {
  const all = await self.registration.getNotifications();
  return all.filter((n) => n.data && n.data.request_id === requestId);
}

/** Shows (or closes, for "resolved") the notification of one push's payload. */
async function show(data) {
  if (data.type === "resolved") {
    for (const n of await notificationsFor(data.request_id)) n.close();
    return;
  }
  const options = {body: data.body || "", tag: tagOf(data), icon: ICON, data,
                   requireInteraction: data.type !== "turn_end"};
  if (data.type === "approval_request") {
    options.actions = [{action: "allow", title: "Allow"}, {action: "deny", title: "Deny"}];
  }
  await self.registration.showNotification(data.title || "Tether", options);
}

self.addEventListener("push", (event) => {
  let data = null;
  try {
    data = event.data ? event.data.json() : null;
  } catch (err) {
    data = null;
  }
  if (data && typeof data.type === "string") event.waitUntil(show(data));
});

/** Focuses a Tether tab and opens the payload's session in it, or opens a new tab. */
async function open(data) {
  const url = new URL(data.url || "/", self.location.origin);
  if (url.origin !== self.location.origin) return;
  const windows = await self.clients.matchAll({type: "window", includeUncontrolled: true});
  for (const client of windows) {
    if (new URL(client.url).origin !== self.location.origin) continue;
    client.postMessage({type: "open", url: url.href});
    if ("focus" in client) await client.focus();
    return;
  }
  await self.clients.openWindow(url.href);
}

/** Answers an approval from its notification: "allow" or "deny".
 *  @returns the HTTP status (0: no network). */
async function answer(data, decision) {
  const path = `/api/sessions/${encodeURIComponent(data.session_id)}` +
               `/approvals/${encodeURIComponent(data.request_id)}`;
  let status = 0;
  try {
    const response = await fetch(path, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({decision, client: "notification"}),
    });
    status = response.status;
  } catch (err) {
    status = 0;
  }
  if (status === 409) {
    await self.registration.showNotification("Answered elsewhere", {
      body: data.body || "", tag: tagOf(data), icon: ICON,
      data: {...data, type: "answered"},
    });
  } else if (status === 0 || status >= 400) {
    await open(data);  // logged out, offline, gone: the page says why
  }
  return status;
}

/** What a click on a notification (or one of its actions) does. */
async function act(notification, action) {
  const data = notification.data || {};
  notification.close();
  if ((action === "allow" || action === "deny") && data.type === "approval_request") {
    return answer(data, action);
  }
  await open(data);
  return 200;
}

self.addEventListener("notificationclick", (event) => {
  event.waitUntil(act(event.notification, event.action));
});

/* The same action from a page of this origin, {type: "notification-action", request_id,
 * action}: what a tap on the action does (tests cannot tap a system notification). */
self.addEventListener("message", (event) => {
  const message = event.data || {};
  if (message.type !== "notification-action") return;
  event.waitUntil((async () => {
    const [notification] = await notificationsFor(message.request_id);
    const status = notification ? await act(notification, message.action) : 404;
    if (event.source) event.source.postMessage({type: "notification-action", status,
                                                request_id: message.request_id});
  })());
});
