// RouteHound's browser client, served by the box at GET /v1/client.js: an
// ES module, no build step. Subscribe to a table over the WebSocket
// (/v1/ws, "changes" frames) or Server-Sent Events (/v1/tables/{t}/events):
// the snapshot, then every change in LSN order. The subscription keeps the
// last LSN it applied and, when the connection drops, reconnects with
// exponential backoff and resumes from that LSN (a resync from the server
// replaces its rows). Writes go over HTTP with If-Match.
//
//   import { connect } from "/v1/client.js";
//   const rh = connect({ token: "dashboard-…" });
//   const sub = rh.subscribe("notes", { onChange: (rows, change) => render(rows) });
//   await rh.put("notes", "gate-2", { open: true }, { ifVersion: 3 });
//
// Browsers cannot set Authorization on a WebSocket or an EventSource: the
// WebSocket carries the token as the subprotocol
// "routehound.bearer.<base64url(token)>" (next to "routehound", which the
// server selects), and SSE is read with fetch, which sends the header.
//
// The box's own dashboard pages hold no token but a session cookie:
// connect({ session: { csrf } }) then talks to /ui/v1 (the same endpoints,
// for sessions, same-origin only), sends the cookie, and sends the page's
// CSRF token in X-RouteHound-CSRF on its fetches (a same-origin GET has no
// Origin header to show where it comes from).

/**
 * @typedef {Object} Row
 * @property {string} key
 * @property {unknown} value
 * @property {number} version
 * @property {number} lsn
 */

/**
 * @typedef {Object} Change
 * @property {"put"|"delete"} op
 * @property {string} key
 * @property {unknown} value  null for a delete
 * @property {number} version
 * @property {number} lsn
 */

/**
 * @typedef {"connecting"|"live"|"reconnecting"|"closed"} State
 */

/**
 * @typedef {Object} ClientOptions
 * @property {string} [token]  a bearer token (dashboard or admin role)
 * @property {{csrf: string}} [session]  instead of a token, on a page of the box itself:
 *   the dashboard's logged-in session (its cookie) and the page's CSRF token
 * @property {string} [base]  the box's origin; default: where this module was served from
 * @property {string} [prefix]  the endpoints' path: default "/v1" with a token, "/ui/v1" with a session
 */

/**
 * @typedef {Object} SubscribeOptions
 * @property {"ws"|"sse"} [transport]  default "ws"
 * @property {number} [from]  start after this LSN (no snapshot) instead of with a snapshot
 * @property {(rows: Map<string, Row>, change: Change|null) => void} [onChange]
 *   after each applied change (change set) and after each applied snapshot (change null)
 * @property {(state: State, detail?: string) => void} [onState]
 * @property {(err: {code: string, message: string}) => void} [onError]  an error frame of the server
 * @property {number} [minBackoffMs]  first reconnect delay, default 250
 * @property {number} [maxBackoffMs]  longest reconnect delay, default 10000
 */

/**
 * An error answered by the server: `code` is its stable code.
 */
export class RouteHoundError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.name = "RouteHoundError";
    this.status = status;
    this.code = code;
  }
}

/**
 * A client of one box.
 * @param {ClientOptions} opts
 * @returns {Client}
 */
export function connect(opts) {
  return new Client(opts);
}

export class Client {
  /** @param {ClientOptions} opts */
  constructor(opts) {
    if (!opts || (!opts.token && !opts.session)) throw new TypeError("RouteHound: a token or a session is required");
    /** @type {string} a bearer token, "" with a session */
    this.token = opts.token || "";
    /** @type {string} the session's CSRF token, "" with a bearer token */
    this.csrf = this.token ? "" : String(opts.session?.csrf || "");
    /** @type {string} */
    this.base = (opts.base || new URL(import.meta.url).origin).replace(/\/$/, "");
    /** @type {string} */
    this.prefix = (opts.prefix || (this.token ? "/v1" : "/ui/v1")).replace(/\/$/, "");
  }

  /** The credentials of a fetch: the bearer token, or the session's CSRF header (the cookie goes by itself). */
  headers() {
    /** @type {Record<string, string>} */
    const h = {};
    if (this.token) h.Authorization = "Bearer " + this.token;
    else h["X-RouteHound-CSRF"] = this.csrf;
    return h;
  }

  /**
   * Subscribes to a table: snapshot then changes, resumed after drops.
   * @param {string} table
   * @param {SubscribeOptions} [opts]
   * @returns {Subscription}
   */
  subscribe(table, opts = {}) {
    return new Subscription(this, table, opts);
  }

  /**
   * Puts a key. With ifVersion, only over that version (0: only if the key
   * does not exist); a conflict throws a RouteHoundError with code
   * "version_conflict".
   * @param {string} table
   * @param {string} key
   * @param {unknown} value  any JSON value
   * @param {{ifVersion?: number}} [opts]
   * @returns {Promise<Row>}
   */
  put(table, key, value, opts = {}) {
    return this.#write("PUT", table, key, JSON.stringify(value), opts.ifVersion);
  }

  /**
   * Puts a key whose value is JSON text, sent as it is (no round trip
   * through a JavaScript value: large numbers and key order are kept).
   * @param {string} table
   * @param {string} key
   * @param {string} json  JSON text
   * @param {{ifVersion?: number}} [opts]
   * @returns {Promise<Row>}
   */
  putJSON(table, key, json, opts = {}) {
    return this.#write("PUT", table, key, json, opts.ifVersion);
  }

  /**
   * Deletes a key (with ifVersion: only that version of it).
   * @param {string} table
   * @param {string} key
   * @param {{ifVersion?: number}} [opts]
   * @returns {Promise<{key: string, lsn: number}>}
   */
  delete(table, key, opts = {}) {
    return this.#write("DELETE", table, key, undefined, opts.ifVersion);
  }

  /**
   * @param {string} method
   * @param {string} table
   * @param {string} key
   * @param {string|undefined} body
   * @param {number|undefined} ifVersion
   */
  async #write(method, table, key, body, ifVersion) {
    const headers = this.headers();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (ifVersion !== undefined) headers["If-Match"] = '"' + ifVersion + '"';
    const res = await fetch(`${this.base}${this.prefix}/tables/${encodeURIComponent(table)}/keys/${encodeURIComponent(key)}`,
      { method, headers, body, credentials: "same-origin" });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) throw new RouteHoundError(res.status, answer.code || "error", answer.message || res.statusText);
    return answer;
  }
}

/** base64url without padding, of the UTF-8 bytes of s. */
function base64url(s) {
  let bin = "";
  for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * One table's subscription. `rows` is the table as of `lsn`.
 */
export class Subscription {
  /**
   * @param {Client} client
   * @param {string} table
   * @param {SubscribeOptions} opts
   */
  constructor(client, table, opts) {
    this.client = client;
    this.table = table;
    this.opts = opts;
    /** @type {Map<string, Row>} the table's rows as of lsn */
    this.rows = new Map();
    /** @type {number|null} the last LSN applied (null: none yet) */
    this.lsn = opts.from ?? null;
    /** @type {State} */
    this.state = "connecting";
    /** Snapshots applied (the first one and every resync). */
    this.snapshots = 0;
    /** Connections opened with a from LSN (resumes). */
    this.resumes = 0;
    /** @type {Map<string, Row>|null} a snapshot being received */
    this.staging = null;
    this.closed = false;
    this.failures = 0;
    this.timer = 0;
    /** @type {(() => void)|null} ends the current connection */
    this.stop = null;
    this.#open();
  }

  /** Ends the subscription for good. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.stop) this.stop();
    this.stop = null;
    this.#setState("closed");
  }

  /** Drops the current connection; it is reopened, resuming, as after a network failure. */
  reconnect() {
    if (this.stop) this.stop();
  }

  /** @param {State} s @param {string} [detail] */
  #setState(s, detail) {
    this.state = s;
    if (this.opts.onState) this.opts.onState(s, detail);
  }

  #open() {
    if (this.closed) return;
    if (this.lsn !== null) this.resumes++;
    this.staging = null;
    let ended = false;
    /** @param {string} why */
    const lost = (why) => {
      if (ended) return;
      ended = true;
      this.stop = null;
      this.#retry(why);
    };
    if ((this.opts.transport || "ws") === "sse") this.#openSSE(lost);
    else this.#openWS(lost);
  }

  /** Schedules the next connection: exponential backoff with jitter. @param {string} why */
  #retry(why) {
    if (this.closed) return;
    const min = this.opts.minBackoffMs ?? 250, max = this.opts.maxBackoffMs ?? 10000;
    const delay = Math.min(max, min * 2 ** Math.min(this.failures, 16)) * (0.5 + Math.random() / 2);
    this.failures++;
    this.#setState("reconnecting", why);
    this.timer = setTimeout(() => this.#open(), delay);
  }

  /** @param {(why: string) => void} lost */
  #openWS(lost) {
    const url = this.client.base.replace(/^http/, "ws") + this.client.prefix + "/ws";
    const protocols = ["routehound"];
    if (this.client.token) protocols.push("routehound.bearer." + base64url(this.client.token));
    const ws = new WebSocket(url, protocols);
    this.stop = () => { ws.close(); lost("closed by the client"); };
    ws.onopen = () => {
      /** @type {Record<string, unknown>} */
      const m = { op: "subscribe", table: this.table, batch: true };
      if (this.lsn !== null) m.from = this.lsn;
      ws.send(JSON.stringify(m));
      if (this.lsn !== null) this.#live(); // a resume sends no snapshot: only what was missed
    };
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      switch (m.type) {
        case "resync": this.staging = new Map(); break;
        case "snapshot":
          if (!this.staging) this.staging = new Map();
          for (const r of m.rows || []) this.staging.set(r.key, r);
          if (m.last) this.#applySnapshot(m.lsn);
          break;
        case "changes": for (const c of m.changes) this.#apply(c); break;
        case "change": this.#apply(m); break;
        case "error": if (this.opts.onError) this.opts.onError(m); break;
        case "close": ws.close(); lost("server closed: " + m.reason); break;
      }
    };
    ws.onclose = (ev) => lost("connection closed (" + ev.code + ")");
    ws.onerror = () => lost("connection failed");
  }

  /** @param {(why: string) => void} lost */
  #openSSE(lost) {
    const ctl = new AbortController();
    this.stop = () => { ctl.abort(); lost("closed by the client"); };
    let url = `${this.client.base}${this.client.prefix}/tables/${encodeURIComponent(this.table)}/events`;
    if (this.lsn !== null) url += "?from=" + this.lsn;
    const run = async () => {
      const res = await fetch(url, { headers: this.client.headers(), credentials: "same-origin", signal: ctl.signal });
      if (!res.ok || !res.body) {
        const answer = await res.json().catch(() => ({}));
        if (this.opts.onError) this.opts.onError({ code: answer.code || "error", message: answer.message || res.statusText });
        throw new Error("subscribe answered " + res.status);
      }
      if (this.lsn !== null) this.#live(); // a resume sends no snapshot: only what was missed
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return "the stream ended";
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          this.#sseEvent(block);
        }
      }
    };
    run().then((why) => lost(why), (err) => lost(String(err)));
  }

  /** One Server-Sent Event block (lines without the blank line). @param {string} block */
  #sseEvent(block) {
    let event = "message", data = "", hasID = false;
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
      else if (line.startsWith("id: ")) hasID = true;
    }
    if (!data) return; // a comment (": ping")
    const d = JSON.parse(data);
    switch (event) {
      case "resync": this.staging = new Map(); break;
      case "put":
      case "delete":
        if (hasID) this.#apply({ op: event, ...d });
        else { // a snapshot row: no id, so that a cut snapshot is not resumed from
          if (!this.staging) this.staging = new Map();
          this.staging.set(d.key, d);
        }
        break;
      case "snapshot": this.#applySnapshot(d.lsn); break;
      case "close": if (this.stop) this.stop(); break;
    }
  }

  /** The snapshot received replaces the rows. @param {number} lsn */
  #applySnapshot(lsn) {
    this.rows = this.staging || new Map();
    this.staging = null;
    this.lsn = lsn;
    this.snapshots++;
    this.#live();
    if (this.opts.onChange) this.opts.onChange(this.rows, null);
  }

  /** @param {Change} c */
  #apply(c) {
    if (this.lsn !== null && c.lsn <= this.lsn) return; // already applied
    if (c.op === "delete") this.rows.delete(c.key);
    else this.rows.set(c.key, { key: c.key, value: c.value, version: c.version, lsn: c.lsn });
    this.lsn = c.lsn;
    this.#live();
    if (this.opts.onChange) this.opts.onChange(this.rows, c);
  }

  #live() {
    this.failures = 0;
    if (this.state !== "live") this.#setState("live");
  }
}
