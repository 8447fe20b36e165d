// Peer: a plain Node.js `http` SSE server, the ceiling of what a fast runtime does here.
//
// Not part of Tether: a baseline for bench/fanout.py, same routes and event shape as
// bench/peers/naive_flask.py (see its docstring). Publishing writes each frame to every
// subscriber's response at once (Node buffers and flushes); the stamp is
// performance.timeOrigin + performance.now() (microseconds, same clock as Python's
// time.time()).
//
//     node bench/peers/node_sse.js <port>
"use strict";
const http = require("http");
const { performance } = require("perf_hooks");

const channels = new Map();
const now = () => (performance.timeOrigin + performance.now()) / 1000;

function subscribers(name) {
  if (!channels.has(name)) channels.set(name, new Set());
  return channels.get(name);
}

function generate(subs, count, size, rate) {
  const started = performance.now();
  let seq = 0;
  const one = () => {
    const head = `${seq} ${now().toFixed(6)} `;
    const data = JSON.stringify({ id: seq + 1, ts: Math.round(now() * 1000) / 1000,
      kind: "text_delta", text: head + "x".repeat(Math.max(0, size - head.length)) });
    const frame = `id: ${seq + 1}\ndata: ${data}\n\n`;
    for (const res of subs) res.write(frame);
    seq += 1;
  };
  if (!rate) {
    while (seq < count) one();
    return;
  }
  const tick = () => {
    while (seq < count && started + (seq * 1000) / rate <= performance.now()) one();
    if (seq < count) setTimeout(tick, Math.max(0, started + (seq * 1000) / rate - performance.now()));
  };
  tick();
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  const channel = url.searchParams.get("channel") || "";
  if (url.pathname === "/healthz") {
    res.end("ok");
  } else if (url.pathname === "/stream") {
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    res.write("event: caught-up\ndata: {}\n\n");
    const subs = subscribers(channel);
    subs.add(res);
    req.on("close", () => subs.delete(res));
  } else if (url.pathname === "/publish" && req.method === "POST") {
    const p = url.searchParams;
    setImmediate(generate, subscribers(channel), Number(p.get("count")), Number(p.get("bytes")),
      Number(p.get("rate")));
    res.writeHead(202);
    res.end("started");
  } else {
    res.writeHead(404);
    res.end();
  }
});
server.listen(Number(process.argv[2]), "127.0.0.1", 4096);
process.on("SIGTERM", () => process.exit(0));
