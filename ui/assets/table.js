// RouteHound dashboard: the table page (ui/pages.templ tablePage), live
// through the box's browser client, GET /v1/client.js, over the page's
// session (the endpoints under /ui/v1: the session cookie, same-origin
// only, the page's CSRF token on fetches).
//
// The page is rendered at an LSN (data-lsn); the subscription resumes from
// it, so only what changed since comes, and a resync (the log moved on too
// far while the page was away) replaces the page's rows. Puts and deletes
// go through the client with If-Match: the version the row shows. Without
// this script the page still works: its forms post to /ui/tables/… .
import { connect } from "/v1/client.js";

const table = document.getElementById("key-table");
if (table) start(table);

/** @param {HTMLElement} el */
function start(el) {
  const name = el.dataset.table || "";
  const after = el.dataset.after || "", until = el.dataset.until || "";
  const readOnly = el.dataset.readonly === "yes";
  const central = el.dataset.central === "yes"; // a central view: the depot is a column (<depot>/<key>)
  const csrf = el.dataset.csrf || "";
  const tbody = /** @type {HTMLElement} */ (document.getElementById("key-rows"));
  const state = document.getElementById("live-state");
  const lsnEl = document.getElementById("table-lsn");
  const form = /** @type {HTMLFormElement|null} */ (document.getElementById("put-form"));
  const enc = new TextEncoder();

  /** Byte order of the keys' UTF-8, as the store sorts them. @param {string} a @param {string} b */
  const cmp = (a, b) => {
    const x = enc.encode(a), y = enc.encode(b);
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  };
  /** The page shows keys in (after, until]. @param {string} k */
  const onPage = (k) => (after === "" || cmp(k, after) > 0) && (until === "" || cmp(k, until) <= 0);
  /** As ui.rowID: "key-" and the key's bytes in hex. @param {string} k */
  const rowID = (k) => "key-" + Array.from(enc.encode(k), (b) => b.toString(16).padStart(2, "0")).join("");
  /** @param {string} s */
  const show = (s) => { if (state) { state.textContent = s; state.className = "live-state " + s; } };

  /** @param {string} text @param {"ok"|"error"} kind */
  function message(text, kind) {
    let m = document.getElementById("message");
    if (!m) {
      m = document.createElement("p");
      m.id = "message";
      m.setAttribute("role", "status");
      document.querySelector("main h1")?.after(m);
    }
    m.className = "msg " + kind;
    m.textContent = text;
  }

  /**
   * A row as ui.keyRow renders it (built with the DOM: no HTML from data).
   * @param {{key: string, value: unknown, version: number, lsn: number}} r
   */
  function rowEl(r) {
    const tr = document.createElement("tr");
    tr.id = rowID(r.key);
    tr.dataset.key = r.key;
    /** @param {string} text @param {string} [cls] @param {string} [field] */
    const td = (text, cls, field) => {
      const c = document.createElement("td");
      if (cls) c.className = cls;
      if (field) c.dataset.field = field;
      c.textContent = text;
      tr.append(c);
      return c;
    };
    if (central) td(r.key.split("/")[0], "", "depot");
    td(r.key, "key");
    const code = document.createElement("code");
    code.className = "json";
    code.dataset.field = "value";
    code.textContent = JSON.stringify(r.value);
    td("").append(code);
    td(String(r.version), "num", "version");
    td(String(r.lsn), "num");
    const actions = td("", "actions");
    if (!readOnly) {
      const a = document.createElement("a");
      a.href = "/ui/tables/" + encodeURIComponent(name) + "?" + new URLSearchParams({ edit: r.key });
      a.dataset.action = "edit";
      a.textContent = "edit";
      const f = document.createElement("form");
      f.method = "post";
      f.action = "/ui/tables/" + encodeURIComponent(name) + "/delete";
      f.className = "inline";
      for (const [n, v] of [["csrf", csrf], ["key", r.key], ["version", String(r.version)]]) {
        const i = document.createElement("input");
        i.type = "hidden";
        i.name = n;
        i.value = v;
        f.append(i);
      }
      const b = document.createElement("button");
      b.type = "submit";
      b.dataset.action = "delete";
      b.textContent = "delete";
      f.append(b);
      actions.append(a, " ", f);
    }
    return tr;
  }

  /** @param {{key: string, value: unknown, version: number, lsn: number}} r */
  function upsert(r) {
    const tr = rowEl(r);
    const old = document.getElementById(tr.id);
    if (old) { old.replaceWith(tr); return; }
    for (const x of tbody.children) {
      if (cmp(/** @type {HTMLElement} */ (x).dataset.key || "", r.key) > 0) { tbody.insertBefore(tr, x); return; }
    }
    tbody.append(tr);
  }

  const rh = connect({ session: { csrf } });
  show("connecting");
  /** @type {import("/v1/client.js").Subscription} */
  const sub = rh.subscribe(name, {
    transport: "ws",
    from: Number(el.dataset.lsn || "0"),
    onState: (s) => show(s),
    onError: (e) => message("Live updates: " + e.message + " (" + e.code + ")", "error"),
    onChange: (rows, c) => {
      if (lsnEl && sub.lsn !== null) lsnEl.textContent = String(sub.lsn);
      if (c === null) { // a resync: the rows are the table's now
        const keep = [...rows.values()].filter((r) => onPage(r.key)).sort((a, b) => cmp(a.key, b.key));
        tbody.replaceChildren(...keep.slice(0, until === "" ? 1000 : keep.length).map(rowEl));
        return;
      }
      if (!onPage(c.key)) return;
      if (c.op === "delete") document.getElementById(rowID(c.key))?.remove();
      else upsert(c);
    },
  });

  // For the console and the browser tests: the page's subscription.
  /** @type {any} */ (el).subscription = sub;

  /**
   * What a refused write says, as the form's answer says it.
   * @param {any} e @param {string} key @param {number|undefined} ifVersion
   */
  function refusal(e, key, ifVersion) {
    switch (e && e.code) {
      case "version_conflict":
        return ifVersion === 0
          ? `Conflict: key "${key}" already exists. Nothing was written; edit the existing row instead.`
          : `Conflict: key "${key}" changed since you loaded it (you edited version ${ifVersion}). Nothing was written; edit the row again (it shows the current version).`;
      case "not_found":
        return `Key "${key}" does not exist (already deleted?). Nothing was changed.`;
      case undefined:
        return "Not written: " + String(e);
      default:
        return "Not written: " + e.message + " (" + e.code + ")";
    }
  }

  if (form && !readOnly) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const key = form.key.value, text = form.value.value, v = form.version.value.trim();
      try { JSON.parse(text); } catch {
        message('value must be JSON text, e.g. {"a":1}, "text" or 42', "error");
        return;
      }
      if (v !== "" && !/^[0-9]+$/.test(v)) {
        message(`version must be a number (the version you edited), got "${v}"`, "error");
        return;
      }
      const ifVersion = v === "" ? undefined : Number(v);
      try {
        const r = await rh.putJSON(name, key, text, { ifVersion });
        message(`put "${r.key}" (version ${r.version}, lsn ${r.lsn})`, "ok");
        form.key.value = form.value.value = form.version.value = "";
      } catch (e) {
        message(refusal(e, key, ifVersion), "error");
      }
    });
  }

  tbody.addEventListener("submit", async (ev) => {
    const f = /** @type {HTMLFormElement} */ (ev.target);
    if (!f.classList.contains("inline")) return;
    ev.preventDefault();
    const key = f.key.value, ifVersion = Number(f.version.value);
    try {
      const r = await rh.delete(name, key, { ifVersion });
      message(`deleted "${r.key}" (lsn ${r.lsn})`, "ok");
    } catch (e) {
      message(refusal(e, key, ifVersion), "error");
    }
  });

  tbody.addEventListener("click", (ev) => {
    const a = /** @type {HTMLElement} */ (ev.target);
    if (!form || a.dataset?.action !== "edit") return;
    const tr = a.closest("tr");
    if (!tr) return;
    ev.preventDefault();
    form.key.value = tr.dataset.key || "";
    form.value.value = tr.querySelector('[data-field="value"]')?.textContent || "";
    form.version.value = tr.querySelector('[data-field="version"]')?.textContent || "";
    form.value.focus();
  });
}
