// RouteHound dashboard: the basemap ([ui] map_tiles). Draws the drivers,
// a trail and route stops on a Leaflet map of the box's own tiles
// (/ui/tiles/{z}/{x}/{y}); moves the markers with the live frames that
// app.js receives (frame.points, frame.gone). Everything comes from the
// map element's data attributes: the pages allow no inline script.
(function () {
  "use strict";
  var el = document.getElementById("map");
  if (!el || !window.L) { return; }
  function data(name, dflt) {
    var v = el.getAttribute("data-" + name);
    if (!v) { return dflt; }
    try { return JSON.parse(v); } catch (e) { return dflt; }
  }
  function text(s) {
    var d = document.createElement("div");
    d.textContent = s;
    return d.innerHTML;
  }
  var minZoom = Number(el.getAttribute("data-minzoom")) || 0;
  var maxZoom = Number(el.getAttribute("data-maxzoom")) || 18;
  // Thousands of markers draw on one canvas rather than as SVG elements.
  var many = data("points", []).length > 1000;
  var map = L.map(el, { minZoom: minZoom, maxZoom: maxZoom, zoomSnap: 1, preferCanvas: many });
  var b = data("bounds", null);
  var tileOpts = {
    minZoom: minZoom, maxZoom: maxZoom,
    // The file's attribution is shown as text, never as markup.
    attribution: text(el.getAttribute("data-attribution") || "")
  };
  // Ask only for tiles of the file's region (no 404s around it).
  if (b && b.length === 4) { tileOpts.bounds = L.latLngBounds([[b[1], b[0]], [b[3], b[2]]]); }
  L.tileLayer(el.getAttribute("data-tiles"), tileOpts).addTo(map);
  var follow = el.getAttribute("data-follow") || "";
  var markers = {};
  var trail = null;
  var all = [];
  var viewSet = false;

  // The marker's SVG path names its driver (once the map has a view:
  // before that Leaflet has not drawn it).
  function tag(m) {
    var path = m.getElement && m.getElement();
    if (path) {
      path.setAttribute("data-driver", m.rhDriver);
      path.classList.toggle("stale", m.rhStale);
    }
  }
  function place(p) {
    if (follow && p.driver !== follow) { return; }
    var ll = [p.lat, p.lng];
    var m = markers[p.driver];
    if (m) {
      m.setLatLng(ll);
    } else {
      m = L.circleMarker(ll, { radius: 8, weight: 3, color: "#fff", fillColor: "#1f4e79", fillOpacity: 1, className: "rh-marker" });
      m.bindTooltip(text(p.driver), { permanent: !!follow || Object.keys(markers).length < 20, direction: "right", offset: [8, 0] });
      m.on("click", function () { location.href = "/ui/fleet/" + encodeURIComponent(p.driver); });
      m.addTo(map);
      markers[p.driver] = m;
    }
    m.rhDriver = p.driver;
    m.rhStale = !!p.stale;
    tag(m);
    if (follow && trail) { trail.addLatLng(ll); }
    // A driver page keeps its driver in view.
    if (follow && viewSet && !map.getBounds().contains(ll)) { map.panTo(ll); }
    return ll;
  }

  var tr = data("trail", []);
  if (tr.length > 0 || follow) {
    trail = L.polyline(tr, { color: "#d64545", weight: 3, opacity: 0.8, className: "rh-trail" }).addTo(map);
    all = all.concat(tr);
  }
  data("points", []).forEach(function (p) { var ll = place(p); if (ll) { all.push(ll); } });
  // A route's stops and the dashed line through them, one layer group a
  // route, replaced whole when the route changes.
  var routes = {};
  function drawRoute(route, stops) {
    if (routes[route]) { routes[route].remove(); delete routes[route]; }
    if (!stops || stops.length === 0) { return; }
    var g = L.layerGroup();
    var lls = [];
    stops.forEach(function (s) {
      var ll = [s.lat, s.lng];
      lls.push(ll);
      L.circleMarker(ll, { radius: 5, weight: 2, color: "#2e9e5b", fillColor: "#fff", fillOpacity: 1, className: "rh-stop" })
        .bindTooltip(text(s.route + " · " + s.id + (s.driver ? " · " + s.driver : ""))).addTo(g);
    });
    if (lls.length > 1) {
      L.polyline(lls, { color: "#2e9e5b", weight: 2, dashArray: "6 6", className: "rh-route" }).addTo(g);
    }
    g.addTo(map);
    routes[route] = g;
  }
  var byRoute = {};
  data("stops", []).forEach(function (s) {
    all.push([s.lat, s.lng]);
    (byRoute[s.route] = byRoute[s.route] || []).push(s);
  });
  Object.keys(byRoute).forEach(function (r) { drawRoute(r, byRoute[r]); });

  if (all.length > 0) {
    map.fitBounds(L.latLngBounds(all), { padding: [30, 30], maxZoom: maxZoom });
  } else if (b && b.length === 4) {
    map.fitBounds([[b[1], b[0]], [b[3], b[2]]]);
  } else {
    map.setView([0, 0], minZoom);
  }
  viewSet = true;
  Object.keys(markers).forEach(function (k) { tag(markers[k]); });

  document.addEventListener("rh-frame", function (e) {
    var f = e.detail || {};
    (f.points || []).forEach(place);
    (f.gone || []).forEach(function (d) {
      if (markers[d]) { markers[d].remove(); delete markers[d]; }
    });
    if (f.routes_reset) { Object.keys(routes).forEach(function (r) { drawRoute(r, null); }); }
    (f.routes || []).forEach(function (r) { drawRoute(r.route, r.stops); });
  });

  // For the browser tests and the curious: where each marker is.
  window.rhMap = {
    map: map,
    positions: function () {
      var o = {};
      Object.keys(markers).forEach(function (k) { var ll = markers[k].getLatLng(); o[k] = [ll.lat, ll.lng]; });
      return o;
    }
  };
})();
