/* Tether browser UI: the service worker, and Web Push on this device, "Notify me on this
 * device" (docs/protocol.md, "Web Push"). The worker is registered on load wherever the
 * browser has service workers, for the offline shell (static/sw.js), which asks no
 * permission; the notification permission is asked from a click, never on load. */
"use strict";

const WebPush = {
  registration: null,
  subscribed: false,
  busy: false,
  error: "",
  render: () => {},

  get supported() {
    return "serviceWorker" in navigator && typeof window.PushManager === "function"
      && typeof window.Notification === "function" && window.isSecureContext;
  },
  /** The per-device "turn finished" option, off by default. */
  get turnEnd() {
    try {
      return localStorage.getItem("tether-push-turn-end") === "1";
    } catch (err) {
      return false;
    }
  },
  set turnEnd(on) {
    try {
      localStorage.setItem("tether-push-turn-end", on ? "1" : "0");
    } catch (err) { /* private mode: the option lasts for this page */ }
  },

  /** Registers the service worker (for the offline shell, with or without push); a device
   *  subscribed before is subscribed again (the server may have forgotten it: a restart of
   *  the memory store, a push service's 410). */
  async init(render) {
    this.render = render || this.render;
    if (!navigator.serviceWorker) return this.render();
    navigator.serviceWorker.addEventListener("message", (event) => {
      const message = event.data || {};
      if (message.type !== "open") return;
      const url = new URL(message.url, location.origin);
      if (url.origin === location.origin) location.hash = url.hash;
    });
    try {
      this.registration = await navigator.serviceWorker.register("/sw.js", {scope: "/"});
    } catch (err) {
      // No offline shell and no push; the page works on, and says why where push is offered.
      if (this.supported) this.error = err.message || String(err);
      else console.warn("tether: service worker", err);
    }
    if (!this.supported || !this.registration) return this.render();
    try {
      const subscription = await this.registration.pushManager.getSubscription();
      if (subscription && Notification.permission === "granted") {
        await this.send(subscription);
        this.subscribed = true;
      }
    } catch (err) {
      this.error = err.message || String(err);
    }
    this.render();
  },

  /** From a click: ask the permission, subscribe, tell the server. */
  async enable() {
    if (!this.supported || this.busy) return;
    this.busy = true;
    this.error = "";
    this.render();
    try {
      const permission = await Notification.requestPermission();
      if (permission !== "granted") {
        throw new Error(permission === "denied"
          ? "Notifications are blocked for this site in the browser's settings."
          : "Notifications were not allowed.");
      }
      const registration = this.registration
        || await navigator.serviceWorker.register("/sw.js", {scope: "/"});
      this.registration = registration;
      await navigator.serviceWorker.ready;
      const response = await fetch("/api/push", {credentials: "same-origin"});
      if (!response.ok) throw new Error(`The server said ${response.status}.`);
      const key = base64url((await response.json()).vapid_public_key);
      let subscription = await registration.pushManager.getSubscription();
      if (subscription && !sameBytes(subscription.options.applicationServerKey, key)) {
        await subscription.unsubscribe();  // made for another server key
        subscription = null;
      }
      subscription = subscription || await registration.pushManager.subscribe(
        {userVisibleOnly: true, applicationServerKey: key});
      await this.send(subscription);
      this.subscribed = true;
    } catch (err) {
      this.error = err.message || String(err);
    } finally {
      this.busy = false;
      this.render();
    }
  },

  async disable() {
    if (this.busy) return;
    this.busy = true;
    this.error = "";
    try {
      const subscription = this.registration
        && await this.registration.pushManager.getSubscription();
      if (subscription) {
        await fetch("/api/push/subscriptions", {
          method: "DELETE", credentials: "same-origin",
          headers: {"Content-Type": "application/json"},
          body: JSON.stringify({endpoint: subscription.endpoint}),
        });
        await subscription.unsubscribe();
      }
      this.subscribed = false;
    } catch (err) {
      this.error = err.message || String(err);
    } finally {
      this.busy = false;
      this.render();
    }
  },

  async setTurnEnd(on) {
    this.turnEnd = on;
    this.error = "";
    try {
      const subscription = this.subscribed && await this.registration.pushManager.getSubscription();
      if (subscription) await this.send(subscription);
    } catch (err) {
      this.error = err.message || String(err);
    }
    this.render();
  },

  async send(subscription) {
    const events = this.turnEnd ? ["prompts", "turn_end"] : ["prompts"];
    const response = await fetch("/api/push/subscriptions", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({...subscription.toJSON(), events}),
    });
    if (!response.ok) {
      let message = "";
      try {
        message = (await response.json()).error.message;
      } catch (err) { /* not JSON */ }
      throw new Error(message || `The server said ${response.status}.`);
    }
  },
};

function base64url(text) {
  const padded = (text + "===".slice((text.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function sameBytes(buffer, bytes) {
  if (!buffer) return false;
  const a = new Uint8Array(buffer);
  return a.length === bytes.length && a.every((v, i) => v === bytes[i]);
}
