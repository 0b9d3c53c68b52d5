// Folds events through a transpiled component's `projection.apply`.
//
//   node fold.mjs <transpiled module.js>  < {"projection": {...}, "events": [...]}
//
// Events come as the cqrs-wasi HTTP API shows them; the state goes to stdout.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [modulePath] = process.argv.slice(2);
const { projection } = await import(pathToFileURL(modulePath).href);
const input = JSON.parse(readFileSync(0, "utf8"));
const encoder = new TextEncoder();
// A batch gives the stream once, and each run of events with the same
// context (one command's events) one entry of `contexts`.
const contexts = [];
let last;
const events = input.events.map((e) => {
  const context = JSON.stringify(e.context);
  if (context !== last) {
    contexts.push(e.context);
    last = context;
  }
  return {
    eventType: e.eventType,
    payload: encoder.encode(JSON.stringify(e.payload)),
    sequence: BigInt(e.sequence),
    position: BigInt(e.position),
    eventId: e.eventId,
    writtenAt: BigInt(Date.parse(e.writtenAt)) * 1000n,
    context: contexts.length - 1,
  };
});
const batch = { stream: input.events[0].stream, contexts, events };
const state = projection.apply(input.projection, undefined, batch);
process.stdout.write(new TextDecoder().decode(state));
