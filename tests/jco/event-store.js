// The `cqrs-wasi:handlers/event-store` import, for running a component's
// projection outside a cqrs-wasi host: a projection never calls it.
function refuse() {
  throw new Error("a projection never reads the event store");
}
export const readStream = refuse;
export const streamSequence = refuse;
export const listInstances = refuse;
export const runProjection = refuse;
