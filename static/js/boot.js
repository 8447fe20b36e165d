/* The modern client's gate, loaded as <script type="module">: a browser without ES modules
 * skips it and runs the <script nomodule> basic client instead (static/basic/basic.js).
 *
 * A browser with modules may still lack what the modern client needs (README, Browsers):
 * this checks it first and, when something is missing, hands over to the basic client
 * (/?client=basic, which needs only ES5 and XMLHttpRequest) rather than leaving a dead page.
 * When all is there, it loads the modern scripts, listed in index.html on this element's
 * data-scripts, in order (async = false), as classic scripts sharing globals as before.
 * Written in ES5 syntax on purpose: it must run, and decide, in any browser with modules. */
var boot = document.getElementById("boot");

/** The first thing the modern client needs that this browser lacks, or "". */
function missing() {
  var w = window;
  var needs = [
    ["fetch", typeof w.fetch === "function"],
    ["Promise", typeof w.Promise === "function"],
    ["AbortController", typeof w.AbortController === "function"],
    ["URLSearchParams", typeof w.URLSearchParams === "function"],
    ["Map and Set", typeof w.Map === "function" && typeof w.Set === "function"],
    // ES2022: the scripts' class fields; the vendored Markdown renderer's Object.hasOwn and .at()
    ["ES2022", typeof Object.hasOwn === "function" && typeof [].at === "function"],
    ["<dialog>", typeof w.HTMLDialogElement === "function"
      && typeof w.HTMLDialogElement.prototype.showModal === "function"],
    ["replaceChildren", typeof w.Element === "function"
      && typeof w.Element.prototype.replaceChildren === "function"],
    ["CSS custom properties", !!(w.CSS && w.CSS.supports && w.CSS.supports("color", "var(--c)"))],
  ];
  for (var i = 0; i < needs.length; i++) {
    if (!needs[i][1]) return needs[i][0];
  }
  return "";
}

var handedOver = false;

function handOver(why) {
  if (handedOver) return;
  handedOver = true;
  location.replace("/?client=basic&why=" + encodeURIComponent(why) + location.hash);
}

var lacking = missing();
if (lacking) {
  handOver(lacking);
} else {
  // A script this browser cannot parse (syntax newer than it) would leave a dead page.
  var started = false;
  window.addEventListener("error", function (event) {
    if (!started && event.error && event.error.name === "SyntaxError") handOver("syntax");
  });
  var sources = boot.getAttribute("data-scripts").split(/\s+/);
  for (var i = 0; i < sources.length; i++) {
    if (!sources[i]) continue;
    var script = document.createElement("script");
    script.src = sources[i];
    script.async = false; // run in the order listed, as the deferred scripts did
    if (i === sources.length - 1) script.addEventListener("load", function () { started = true; });
    document.head.appendChild(script);
  }
}
