/* Tether's offline page (templates/offline.html). The service worker answers with it any page
 * it cannot fetch, at that page's own URL: once the server answers /healthz again, a reload
 * brings back the page that was asked for, the session in its URL with it, and the client
 * replays what it missed from the server's log. Asked at once when the browser says it is
 * back online, when the tab comes back to the foreground or on "Try now"; otherwise every few
 * seconds, less often the longer it lasts. ES5 and XMLHttpRequest, as login.js: any browser
 * may open /offline itself.
 *
 * The server renders the same page, with a 503, for a page asked for while its store (Redis)
 * does not answer (blueprints/errors.py); it then asks the API (body data-check) rather than
 * /healthz, which answers all along. */
(function () {
  "use strict";
  var FIRST_DELAY = 2;  // seconds
  var MAX_DELAY = 15;
  var status = document.getElementById("offline-status");
  var retry = document.getElementById("offline-retry");
  var delay = FIRST_DELAY;
  var timer = null;
  var checking = false;

  function say(text) {
    if (status) status.textContent = text;
  }

  /** The page the reader asked for: this URL, unless it is /offline itself. */
  function comeBack() {
    if (location.pathname === "/offline") location.replace("/" + location.hash);
    else location.reload();
  }

  /** Counts down on the page, then checks. */
  function wait(seconds) {
    clearTimeout(timer);
    if (seconds <= 0) return check();
    say("Trying again in " + seconds + " s.");
    timer = setTimeout(function () { wait(seconds - 1); }, 1000);
  }

  /** The server (and, on the store's page, its store) answers: any status but none at all,
   *  a gateway's "down" or a 503. A 401 counts: the reload then shows the login page. */
  function answered(code) {
    return code >= 200 && code < 500 && code !== 408 && code !== 429;
  }

  function check() {
    if (checking) return;
    checking = true;
    clearTimeout(timer);
    say("Trying…");
    var xhr = new XMLHttpRequest();
    var url = document.body.getAttribute("data-check") || "/healthz";
    xhr.open("GET", url + (url.indexOf("?") < 0 ? "?" : "&") + "t=" + new Date().getTime());
    xhr.timeout = 5000;
    xhr.onloadend = function () {
      checking = false;
      if (answered(xhr.status)) {
        say("Back online: reconnecting…");
        comeBack();
        return;
      }
      wait(delay);
      delay = Math.min(delay * 2, MAX_DELAY);
    };
    xhr.send();
  }

  function soon() {
    delay = FIRST_DELAY;
    check();
  }

  window.addEventListener("online", soon);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) soon();
  });
  if (retry) retry.addEventListener("click", soon);
  wait(delay);
})();
