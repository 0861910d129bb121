#!/usr/bin/env node
// Test peer: the npm `matrix-appservice` library (not written here) receives
// appservice-streams transactions. Prints one JSON line per received item:
//   {"kind": "ready", "port": N}            once listening (always the first line)
//   {"kind": "event", "event": {...}}       per AppService "event" emission
//   {"kind": "ephemeral", "event": {...}}   per AppService "ephemeral" emission
// Usage: node receiver.js [--port N] [--hs-token TOKEN] [--host 127.0.0.1]
// (env fallbacks: RECEIVER_PORT, RECEIVER_HS_TOKEN, RECEIVER_HOST;
//  RECEIVER_HTTP_LOG=1 copies the library's access log to stderr).
// Exits 0 on SIGTERM/SIGINT after closing the HTTP server.
"use strict";

const { AppService } = require("matrix-appservice");

function option(name, envName, fallback) {
  const flag = `--${name}`;
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag && i + 1 < args.length) return args[i + 1];
    if (args[i].startsWith(`${flag}=`)) return args[i].slice(flag.length + 1);
  }
  const fromEnv = process.env[envName];
  return fromEnv !== undefined && fromEnv !== "" ? fromEnv : fallback;
}

// Writes to a pipe are synchronous on Linux, so each line is flushed as written.
function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

const port = Number(option("port", "RECEIVER_PORT", "0"));
const host = option("host", "RECEIVER_HOST", "127.0.0.1");
const hsToken = option("hs-token", "RECEIVER_HS_TOKEN", "");
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`receiver: bad port ${JSON.stringify(port)}\n`);
  process.exit(2);
}
if (!hsToken) {
  process.stderr.write("receiver: give --hs-token or RECEIVER_HS_TOKEN\n");
  process.exit(2);
}

const appservice = new AppService({ homeserverToken: hsToken, httpMaxSizeBytes: 64 * 1024 * 1024 });
appservice.on("event", (event) => emit({ kind: "event", event }));
appservice.on("ephemeral", (event) => emit({ kind: "ephemeral", event }));
if (process.env.RECEIVER_HTTP_LOG) {
  appservice.on("http-log", (line) => process.stderr.write(`${line}\n`));
}

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`receiver: ${signal}, closing\n`);
  const server = appservice.server;
  if (!server) process.exit(0); // signalled before listening
  const force = setTimeout(() => process.exit(0), 2000);
  force.unref();
  appservice.close().then(
    () => process.exit(0),
    (err) => {
      process.stderr.write(`receiver: close failed: ${err}\n`);
      process.exit(0);
    },
  );
  // close() alone waits for open connections, and the worker keeps them alive.
  server.closeAllConnections();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

appservice.listen(port, host).then(
  () => emit({ kind: "ready", port: appservice.server.address().port }),
  (err) => {
    process.stderr.write(`receiver: cannot listen on ${host}:${port}: ${err}\n`);
    process.exit(1);
  },
);
