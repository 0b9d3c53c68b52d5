// Write cqrs-wasi command handlers, projections and notification handlers in
// plain JavaScript, built into a component with ComponentizeJS.
//
// Commands, events and states are classes made by `message(name, fields)`:
// the name is the command or event type, the fields (in declaration order)
// its JSON payload, each checked on the way in. A handler is a function
// given to `defineCommandHandler`, `defineProjection` or
// `defineNotificationHandler`; `exportComponent` turns them into the three
// exports of the `domain-component` world of `wit/`:
//
//     const { commandHandler, projection, notificationHandler } = exportComponent({...});
//     export { commandHandler, projection, notificationHandler };
//
// Anything a handler throws becomes the call's error with its message
// (`handler_failed` at the host), never a trap; `Rejected` and
// `InvalidPayload` become those errors. Running out of memory is left to
// trap, as it does in a Rust handler.
//
// This module owns the handler-facing API and the translation to the WIT
// types; it must not keep state between calls (the host may or may not reuse
// an instance). JSON goes out as the Rust SDK writes it (compact, fields in
// declaration order), so an event a JS handler appends is byte-for-byte the
// one a Rust handler would.

import {
  readStream,
  runProjection,
  streamSequence,
} from 'cqrs-wasi:handlers/event-store@0.2.0';
import { send as sendCommand } from 'cqrs-wasi:handlers/commands@0.2.0';
import { publish as publishEvent } from 'cqrs-wasi:handlers/publisher@0.2.0';

/** The command is refused by the domain's rules; the message is shown to the caller. */
export class Rejected extends Error {}

/** The command's payload is not one the handler accepts. */
export class InvalidPayload extends Error {}

/** A payload or state that does not fit its class. */
export class PayloadError extends Error {}

/** A failed import call: `kind` is the WIT case (`denied`, `other`, ...). */
export class HostError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.kind = kind;
    this.detail = message;
  }
}

/** Reading from the event store failed. */
export class StoreError extends HostError {}
/** A command sent from a notification handler failed (`rejected`: retrying will not help). */
export class SendError extends HostError {}
/** Publishing a custom event failed. */
export class PublishError extends HostError {}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

/** How many events one `read-stream` call asks the host for. */
const READ_PAGE = 1024;

/**
 * The field kinds `message` checks: `string`, `integer` (a safe integer:
 * JavaScript numbers hold no more exactly), `number`, `boolean`, `any`; a
 * kind ending in `?` may also be absent or null.
 */
const KINDS = {
  string: (v) => typeof v === 'string',
  integer: (v) => Number.isSafeInteger(v),
  number: (v) => typeof v === 'number' && Number.isFinite(v),
  boolean: (v) => typeof v === 'boolean',
  any: () => true,
};

function describeValue(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${JSON.stringify(value)}`;
}

/**
 * A command, event or state class named `name` with `fields` ({ field:
 * kind }) and, for fields a payload may leave out, `defaults`.
 * `new Class({ field: value })` builds one; `Class.typeName` is `name`.
 */
export function message(name, fields = {}, defaults = {}) {
  for (const [field, kind] of Object.entries(fields)) {
    if (!KINDS[kind.replace(/\?$/, '')]) {
      throw new TypeError(`${name}.${field}: unknown kind ${kind}`);
    }
  }
  const Message = class {
    constructor(values = {}) {
      for (const field of Object.keys(fields)) {
        // An absent field without a default is written as `null`, as the
        // Rust SDK writes `None`.
        if (field in values) this[field] = values[field];
        else this[field] = field in defaults ? structuredClone(defaults[field]) : null;
      }
    }

    /** Checks plain JSON data against the fields and builds an instance. */
    static fromJson(value) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw new PayloadError(`invalid type: ${describeValue(value)}, expected an object (${name})`);
      }
      const values = {};
      for (const [field, kind] of Object.entries(fields)) {
        const optional = kind.endsWith('?');
        const present = value[field] !== undefined && !(optional && value[field] === null);
        if (!present) {
          if (field in defaults || optional) continue;
          throw new PayloadError(`missing field \`${field}\``);
        }
        if (!KINDS[kind.replace(/\?$/, '')](value[field])) {
          throw new PayloadError(
            `invalid type: ${describeValue(value[field])}, expected ${kind.replace(/\?$/, '')} at \`${field}\``,
          );
        }
        values[field] = value[field];
      }
      return new Message(values);
    }
  };
  Object.defineProperty(Message, 'name', { value: name });
  Message.typeName = name;
  return Message;
}

/** `value` as compact JSON bytes. */
export function encode(value) {
  return utf8.encode(JSON.stringify(value));
}

/** `payload` (JSON bytes) read as `Class`; an empty payload reads as `{}`. */
export function decode(Class, payload) {
  let text;
  try {
    text = fromUtf8.decode(payload);
  } catch (error) {
    throw new PayloadError(`not UTF-8: ${error.message}`);
  }
  let value;
  try {
    value = JSON.parse(text.trim() === '' ? '{}' : text);
  } catch (error) {
    throw new PayloadError(`not JSON: ${error.message}`);
  }
  return Class ? Class.fromJson(value) : value;
}

function byType(classes) {
  return new Map(classes.map((Class) => [Class.typeName, Class]));
}

/**
 * `handle(command, ctx)` as the handler of `commands` (`message` classes)
 * on `domain / entityType`: it returns the events to append (instances of
 * `message` classes), or throws `Rejected` / `InvalidPayload`.
 */
export function defineCommandHandler(domain, entityType, commands, handle) {
  return { domain, entityType, commands: byType(commands), handle };
}

/**
 * `apply(state, event, recorded)` as projection `name` of `domain /
 * entityType` over `events` (the host passes no others). `State` is the
 * state's `message` class; `new State()` is the initial state. `apply`
 * changes the state in place, or returns a new one.
 */
export function defineProjection(domain, entityType, name, events, State, apply) {
  return { domain, entityType, name, events: byType(events), State, apply };
}

/**
 * `handle(notification, ctx)` as the notification handler `name`,
 * subscribed with Event Grid's filters (`eventTypes`, `subjectBeginsWith`,
 * `subjectEndsWith`; case-insensitive). A notification may come more than
 * once: derive the ids of the commands it sends from `notification.id`. A
 * throw means "not handled": the host delivers it again later.
 */
export function defineNotificationHandler(name, filters, handle) {
  return {
    name,
    eventTypes: filters.eventTypes ?? [],
    subjectBeginsWith: filters.subjectBeginsWith,
    subjectEndsWith: filters.subjectEndsWith,
    handle,
  };
}

/** Identity of an event stream: `domain / entityType / instanceKey`. */
export function streamId(domain, entityType, instanceKey) {
  return { domain, entityType, instanceKey };
}

function fold(projection, state, recorded) {
  const Class = projection.events.get(recorded.eventType);
  if (!Class) return state;
  const folded = projection.apply(state, decode(Class, recorded.payload), recorded);
  return folded === undefined ? state : folded;
}

/** An event as the store recorded it; u64s as numbers. */
function recordedFromWit(stream, event, context) {
  return {
    stream,
    eventType: event.eventType,
    payload: event.payload,
    sequence: Number(event.sequence),
    position: Number(event.position),
    eventId: event.eventId,
    writtenAt: Number(event.writtenAt),
    context,
    decode(Class) {
      return decode(Class, this.payload);
    },
  };
}

function hostCall(ErrorClass, call) {
  try {
    return call();
  } catch (error) {
    // A failed import call throws its WIT error as `payload`.
    const payload = error?.payload ?? error;
    if (payload && typeof payload.tag === 'string') {
      throw new ErrorClass(payload.tag, payload.val);
    }
    throw error;
  }
}

/** The command being handled and read access to its stream. */
class CommandContext {
  constructor(stream, commandId, context) {
    this.stream = stream;
    this.commandId = commandId;
    this.context = context;
  }

  /** The sequence of the stream's last event; 0 when it is new. */
  sequence() {
    return Number(hostCall(StoreError, () => streamSequence(this.stream)));
  }

  /** Every event of the command's stream, in order. */
  events() {
    return this.eventsOf(this.stream);
  }

  /** Every event of another stream, if the component is granted its domain. */
  eventsOf(stream) {
    return readAll(stream);
  }

  /** The state of `projection` over the stream, computed by the host. */
  project(projection) {
    const state = hostCall(StoreError, () => runProjection(projection.name, this.stream, undefined));
    try {
      return decode(projection.State, state);
    } catch (error) {
      throw new StoreError('other', `state of projection ${projection.name} unreadable: ${error.message}`);
    }
  }
}

function readAll(stream) {
  const events = [];
  for (;;) {
    const from = events.length ? BigInt(events[events.length - 1].sequence + 1) : 1n;
    const page = hostCall(StoreError, () => readStream(stream, from, READ_PAGE));
    for (const event of page) events.push(recordedFromWit(event.stream, event, event.context));
    if (page.length < READ_PAGE) return events;
  }
}

/** What a notification handler can do: send commands, publish, read streams. */
class NotificationContext {
  /**
   * Sends `command` (a `message` instance) to `stream` and waits for its
   * outcome; throws `SendError`. Pass an id derived from the
   * notification's, so that a redelivery replays instead of running again.
   */
  send(stream, command, commandId) {
    const outcome = hostCall(SendError, () =>
      sendCommand({
        stream,
        commandType: command.constructor.typeName,
        payload: encode(command),
        commandId,
      }),
    );
    return { ...outcome, streamSequence: Number(outcome.streamSequence) };
  }

  /** Publishes a custom event (`data` as JSON) to the host's topic `topic`. */
  publish(topic, { key, eventType, subject, data, dataVersion = '1.0' }) {
    hostCall(PublishError, () =>
      publishEvent(topic, { key, eventType, subject, data: encode(data), dataVersion }),
    );
  }

  /** Every event of `stream`, if the component is granted its domain. */
  eventsOf(stream) {
    return readAll(stream);
  }
}

/**
 * The WIT error for an unexpected throw: its message, with its stack on
 * stderr, which the host logs with the component's name. Running out of
 * memory is rethrown to trap.
 */
function failure(error) {
  // SpiderMonkey throws its out-of-memory as the bare string.
  if (error === 'out of memory') {
    throw error;
  }
  console.error(error?.stack ?? String(error));
  return error instanceof Error ? `${error.name}: ${error.message}` : `thrown: ${String(error)}`;
}

/**
 * Throws `payload` as the export's WIT error: ComponentizeJS lowers a thrown
 * value's `payload` as the `result`'s error.
 */
function fail(payload) {
  const error = new Error(typeof payload === 'string' ? payload : payload.val);
  error.payload = payload;
  throw error;
}

/** A case of a WIT variant, as ComponentizeJS represents it. */
function variant(tag, val) {
  return { tag, val };
}

function handle(handlers, command) {
  const { stream } = command;
  const handler = handlers.find(
    (h) => h.domain === stream.domain && h.entityType === stream.entityType && h.commands.has(command.commandType),
  );
  if (!handler) {
    fail(variant('other', `this component does not handle ${command.commandType} on ${stream.domain}/${stream.entityType}`));
  }
  let decoded;
  try {
    decoded = decode(handler.commands.get(command.commandType), command.payload);
  } catch (error) {
    fail(variant('invalid-payload', error.message));
  }
  const ctx = new CommandContext(stream, command.commandId, command.context);
  let events;
  try {
    events = handler.handle(decoded, ctx).map((event) => ({
      eventType: event.constructor.typeName,
      payload: encode(event),
    }));
  } catch (error) {
    if (error instanceof Rejected) fail(variant('rejected', error.message));
    if (error instanceof InvalidPayload) fail(variant('invalid-payload', error.message));
    if (error instanceof StoreError) fail(variant('store', variant(error.kind, error.detail)));
    fail(variant('other', failure(error)));
  }
  return events;
}

function apply(projections, id, state, batch) {
  const projection = projections.find(
    (p) => p.domain === id.domain && p.entityType === id.entityType && p.name === id.projectionType,
  );
  if (!projection) {
    fail(variant('other', `this component does not compute projection ${id.projectionType} of ${id.domain}/${id.entityType}`));
  }
  let current;
  try {
    current = state === undefined ? new projection.State() : decode(projection.State, state);
  } catch (error) {
    fail(variant('invalid-state', error.message));
  }
  for (const event of batch.events) {
    const context = batch.contexts[event.context];
    if (context === undefined) {
      fail(variant('invalid-event', `event ${event.sequence} names context ${event.context}, but the batch gives ${batch.contexts.length}`));
    }
    try {
      current = fold(projection, current, recordedFromWit(batch.stream, event, context));
    } catch (error) {
      if (error instanceof PayloadError) fail(variant('invalid-event', error.message));
      fail(variant('other', failure(error)));
    }
  }
  return encode(current);
}

function notify(handlers, subscription, notification) {
  const handler = handlers.find((n) => n.name === subscription);
  if (!handler) fail(`this component has no notification handler ${subscription}`);
  const received = {
    ...notification,
    json() {
      return decode(undefined, notification.data);
    },
  };
  try {
    handler.handle(received, new NotificationContext());
  } catch (error) {
    fail(failure(error));
  }
}

/**
 * The component's exports: `commandHandler`, `projection` and
 * `notificationHandler`, to be exported under those names by the module
 * ComponentizeJS builds.
 */
export function exportComponent({ commands = [], projections = [], notifications = [] }) {
  return {
    commandHandler: {
      describe: () =>
        commands.map((h) => ({ domain: h.domain, entityType: h.entityType, commandTypes: [...h.commands.keys()] })),
      handle: (command) => handle(commands, command),
    },
    projection: {
      describe: () =>
        projections.map((p) => ({
          id: { domain: p.domain, entityType: p.entityType, projectionType: p.name },
          eventTypes: [...p.events.keys()],
        })),
      apply: (id, state, batch) => apply(projections, id, state, batch),
    },
    notificationHandler: {
      describe: () =>
        notifications.map((n) => ({
          name: n.name,
          includedEventTypes: n.eventTypes,
          subjectBeginsWith: n.subjectBeginsWith,
          subjectEndsWith: n.subjectEndsWith,
        })),
      handle: (subscription, notification) => notify(notifications, subscription, notification),
    },
  };
}
