// A small client of the graphql-transport-ws protocol
// (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md), written for the runs page
// rather than vendored: it needs one connection, queries, subscriptions and reconnection.
//
// The connection authenticates with the browser's session cookie: connection_init carries no
// payload, as GraphiQL's does (graphql_api/live_auth.py).
//
// Reconnection: a dropped connection (closed, or silent past PONG_TIMEOUT_MS) is opened again
// after a growing, jittered delay. Each subscription is then started again with variables asked
// of its `variables()` function at that moment, so a stream can resume from the last cursor it
// saw. Queries in flight when the connection drops fail with ConnectionLost: the caller retries.
// A refusal of the credentials (close 4403: signed out, session expired) is final.

const PROTOCOL = "graphql-transport-ws";
const ACK_TIMEOUT_MS = 10000;
const PING_INTERVAL_MS = 15000;
const PONG_TIMEOUT_MS = 10000;
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 5000;
const REFUSED = 4403;

export class ConnectionLost extends Error {}

// An error answer (a list of GraphQL errors); `code` is the first one's extensions.code.
export class GraphQLErrors extends Error {
  constructor(errors) {
    const list = Array.isArray(errors) ? errors : [errors];
    super(list.map((error) => (error && error.message) || String(error)).join("; "));
    this.errors = list;
    this.code = (list[0] && list[0].extensions && list[0].extensions.code) || null;
  }
}

export class GraphQLSocket {
  // onState({state, attempt, retryInMs, reason}): state is "connecting", "open",
  // "reconnecting" or "refused". onOpen(): after each acknowledged connection (the first too).
  constructor(url, { onState = () => {}, onOpen = () => {} } = {}) {
    this.url = url;
    this.onState = onState;
    this.onOpen = onOpen;
    this.socket = null;
    this.acknowledged = false;
    this.stopped = false;
    this.attempt = 0;
    this.nextId = 1;
    this.operations = new Map(); // id -> {payload(), next, error, complete, once}
    this.timers = {};
    this.waiters = []; // whenOpen() promises
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  // Resolves once the connection is acknowledged (at once if it is).
  whenOpen() {
    if (this.acknowledged) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  // One result (a query): resolves with `data`, rejects with GraphQLErrors or ConnectionLost.
  request(query, variables = {}) {
    return new Promise((resolve, reject) => {
      if (!this.acknowledged) {
        reject(new ConnectionLost("not connected"));
        return;
      }
      const id = String(this.nextId++);
      this.operations.set(id, {
        once: true,
        payload: () => ({ query, variables }),
        next: (result) => {
          if (result.errors && result.errors.length) reject(new GraphQLErrors(result.errors));
          else resolve(result.data);
        },
        error: (errors) => reject(new GraphQLErrors(errors)),
        complete: () => {},
        lost: () => reject(new ConnectionLost("connection lost")),
      });
      this._send({ id, type: "subscribe", payload: { query, variables } });
    });
  }

  // A subscription that survives reconnections; returns a function that stops it.
  // `variables()` is asked again at each (re)start. Handlers: next(data), error(GraphQLErrors).
  subscribe(query, variables, { next, error = () => {} }) {
    const id = String(this.nextId++);
    const operation = {
      once: false,
      payload: () => ({ query, variables: variables() }),
      next: (result) => {
        if (result.errors && result.errors.length) error(new GraphQLErrors(result.errors));
        if (result.data) next(result.data);
      },
      error: (errors) => {
        this.operations.delete(id);
        error(new GraphQLErrors(errors));
      },
      complete: () => this.operations.delete(id),
      lost: () => {},
    };
    this.operations.set(id, operation);
    if (this.acknowledged) this._send({ id, type: "subscribe", payload: operation.payload() });
    return () => {
      if (this.operations.delete(id) && this.acknowledged) this._send({ id, type: "complete" });
    };
  }

  _connect() {
    this._clearTimers();
    this.acknowledged = false;
    this.onState({ state: this.attempt ? "reconnecting" : "connecting", attempt: this.attempt });
    const socket = new WebSocket(this.url, PROTOCOL);
    this.socket = socket;
    socket.onopen = () => {
      this._send({ type: "connection_init" });
      this.timers.ack = setTimeout(() => this._drop("no connection_ack"), ACK_TIMEOUT_MS);
    };
    socket.onmessage = (event) => this._receive(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      if (event.code === REFUSED) this._refuse(event.reason || "Not signed in.");
      else this._drop(event.reason || `closed (${event.code})`);
    };
  }

  _receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      this._drop("unreadable message");
      return;
    }
    this._heard();
    const operation = message.id !== undefined ? this.operations.get(message.id) : undefined;
    switch (message.type) {
      case "connection_ack":
        clearTimeout(this.timers.ack);
        this.acknowledged = true;
        this.attempt = 0;
        this.timers.ping = setInterval(() => this._ping(), PING_INTERVAL_MS);
        this.onState({ state: "open" });
        for (const [id, op] of this.operations) {
          this._send({ id, type: "subscribe", payload: op.payload() });
        }
        this.onOpen();
        for (const resolve of this.waiters.splice(0)) resolve();
        break;
      case "ping":
        this._send({ type: "pong" });
        break;
      case "pong":
        break;
      case "next":
        if (operation) operation.next(message.payload || {});
        break;
      case "error":
        if (operation) {
          this.operations.delete(message.id);
          operation.error(message.payload);
        }
        break;
      case "complete":
        if (operation) {
          this.operations.delete(message.id);
          operation.complete();
        }
        break;
      default:
        break;
    }
  }

  _ping() {
    this._send({ type: "ping" });
    clearTimeout(this.timers.pong);
    this.timers.pong = setTimeout(() => this._drop("no answer to ping"), PONG_TIMEOUT_MS);
  }

  _heard() {
    clearTimeout(this.timers.pong);
  }

  _send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  // Forget the current socket (a silent one may take long to report its close), fail the
  // queries in flight, and try again after the backoff.
  _drop(reason) {
    this._abandon();
    if (this.stopped) return;
    this.attempt += 1;
    const ceiling = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** (this.attempt - 1));
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.onState({ state: "reconnecting", attempt: this.attempt, retryInMs: delay, reason });
    this.timers.retry = setTimeout(() => this._connect(), delay);
  }

  _refuse(reason) {
    this._abandon();
    this.stopped = true;
    this.onState({ state: "refused", reason });
  }

  _abandon() {
    this._clearTimers();
    this.acknowledged = false;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      if (socket.readyState <= WebSocket.OPEN) socket.close(1000);
    }
    for (const [id, operation] of this.operations) {
      if (operation.once) {
        this.operations.delete(id);
        operation.lost();
      }
    }
  }

  _clearTimers() {
    clearTimeout(this.timers.ack);
    clearTimeout(this.timers.pong);
    clearTimeout(this.timers.retry);
    clearInterval(this.timers.ping);
    this.timers = {};
  }
}
