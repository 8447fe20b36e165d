/* The login page. A login URL carries the token in its fragment (/#token=…), which the browser
 * never sends: post it with the form (a navigation, as the server requires) after dropping it
 * from the address bar, so that no request line, log or history entry holds it. ES5, so that
 * every browser that can show the form can use the URL. */
(function () {
  "use strict";
  var status = document.querySelector(".login-status");
  if (location.hash === "#logged-out") {
    history.replaceState(null, "", location.pathname + location.search);
    if (status) status.textContent = "You logged out. This browser's login has ended.";
    return;
  }
  var match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search);
  var token;
  try {
    token = decodeURIComponent(match[1]);
  } catch (e) {
    token = match[1]; // a stray "%": the server says whether it is the token
  }
  var form = document.querySelector(".login-form");
  if (!token || !form) return;
  form.elements.token.value = token;
  if (status) status.textContent = "Logging in…";
  form.submit();
})();
