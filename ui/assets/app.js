// RouteHound dashboard: apply live frames from /ui/live/… (Server-Sent
// Events) to the server-rendered page. Frames carry HTML fragments rendered
// (and escaped) by the server.
(function () {
  "use strict";
  var main = document.querySelector("main[data-live]");
  var state = document.getElementById("live-state");
  function show(s) { if (state) { state.textContent = s; state.className = "live-state " + s; } }
  function apply(f) {
    (f.replace || []).forEach(function (s) {
      var el = document.getElementById(s.id);
      if (el) { el.innerHTML = s.html; }
    });
    (f.remove || []).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.remove(); }
    });
    (f.upsert || []).forEach(function (u) {
      var el = document.getElementById(u.id);
      if (el) { el.outerHTML = u.html; return; }
      var p = document.getElementById(u.parent);
      if (p) { p.insertAdjacentHTML(u.prepend ? "afterbegin" : "beforeend", u.html); }
    });
    (f.set || []).forEach(function (s) {
      var el = document.getElementById(s.id);
      if (el) { el.innerHTML = s.html; }
    });
    if (f.lsn) { main.setAttribute("data-lsn", String(f.lsn)); }
    // The map (map.js) takes the frame's driver moves.
    if (f.points || f.gone || f.routes) { document.dispatchEvent(new CustomEvent("rh-frame", { detail: f })); }
  }
  // The table page is live through the box's browser client instead
  // (table.js over /v1/client.js); its data-live URL stays for tools.
  if (main && main.getAttribute("data-live") && !document.getElementById("key-table")) {
    var es = new EventSource(main.getAttribute("data-live"));
    es.onopen = function () { show("live"); };
    es.onerror = function () { show("reconnecting"); };
    es.onmessage = function (e) {
      try { apply(JSON.parse(e.data)); } catch (err) { show("error"); }
    };
    es.addEventListener("reload", function () { es.close(); location.reload(); });
    es.addEventListener("close", function () { es.close(); show("closed"); });
  }
  // As ui/format.go's humanAge: "42s", "12m 5s", "5h 12m", "13 d".
  function age(s) {
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + (s % 60) + "s"; }
    if (s < 86400) { return Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m"; }
    return Math.floor(s / 86400) + " d";
  }
  // Ages tick in the browser; rows carry the time they were last seen.
  setInterval(function () {
    var now = Date.now();
    document.querySelectorAll("td.age[data-ts]").forEach(function (td) {
      var ts = Number(td.getAttribute("data-ts"));
      if (!ts) { return; }
      var s = Math.max(0, Math.round((now - ts) / 1000));
      td.textContent = age(s);
      var tr = td.parentElement;
      if (tr) { tr.classList.toggle("stale", s > 120); }
    });
  }, 1000);
})();
