/* Tether's service worker, served at /sw.js with scope "/" (docs/protocol.md, "Web Push").
 *
 * It shows a notification for each push: an approval (with Allow and Deny), a question, a
 * finished turn; a "resolved" push closes the request's notification on this device. Allow
 * and Deny answer through the same API the page uses, with the login cookie; the first answer
 * wins, and a 409 turns the notification into "Answered elsewhere". A tap opens the session.
 *
 * It has no fetch handler: every request goes to the network as if it were not here, and
 * nothing (least of all an API answer or anything carrying the token) is cached. */
"use strict";

const ICON = "/static/icons/icon-192.png";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

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
