// The run's map: classes over the imagery the model saw, a legend with counts and an opacity
// slider, the changed cells, and each cell's details on hover (click pins them).
// Data: the JSON in #run-data, written by urbanfusion.workflows.webmap.page. A region's page
// (data.tiles) reads its class tiles and the details of the cells opened from map.pmtiles.
(function () {
  "use strict";

  // Every error becomes a data attribute of <body>, so a headless browser test can read it.
  const errors = [];
  function report() {
    document.body.dataset.errors = String(errors.length);
    document.body.dataset.errorText = errors.join(" | ");
  }
  window.addEventListener("error", (event) => { errors.push(String(event.message)); report(); });
  window.addEventListener("unhandledrejection", (event) => {
    errors.push("unhandled: " + String(event.reason));
    report();
  });
  const consoleError = console.error;
  console.error = function (...args) {
    errors.push(args.map(String).join(" "));
    report();
    consoleError.apply(console, args);
  };
  report();

  const data = JSON.parse(document.getElementById("run-data").textContent);
  const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

  function bytes(b64) {
    if (!b64) return null;
    const text = atob(b64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }
  function floats(b64) {
    const raw = bytes(b64);
    return raw ? new Float32Array(raw.buffer) : null;
  }

  const tiles = data.tiles; // null: every cell is in this page
  const cells = data.cells || {};
  const K = data.classes.length;
  const classId = bytes(cells.class_id);
  const prob = bytes(cells.prob); // K bytes a cell, probability x 255
  const flags = bytes(cells.flags); // 1 imagery, 2 signalling, 4 changed, 8 out of domain
  const previous = bytes(cells.previous_class); // 255: unchanged or no earlier class
  const activity = bytes(cells.activity); // 168 bytes a cell, scaled to the cell's peak
  const peak = floats(cells.activity_peak);
  const size = data.cell_size;
  const H = data.rows * size;
  const W = data.cols * size;
  const bounds = [[0, 0], [H, W]];

  // Grid metres from the south-west corner; 1 unit = 1 m, so the scale bar is right. A region's
  // map scales them so that its zoom z is the archive's: at the top zoom a pixel is a cell.
  let crs = L.CRS.Simple;
  if (tiles) {
    const a = 1 / (size * Math.pow(2, tiles.top_zoom));
    crs = L.extend({}, L.CRS.Simple, { transformation: new L.Transformation(a, 0, -a, a * H) });
  }
  const map = L.map("map", {
    crs: crs,
    minZoom: tiles ? -3 : -10,
    maxZoom: tiles ? tiles.top_zoom + 6 : 4,
    zoomSnap: 0.25,
    fadeAnimation: !tiles, // tiles appear at once: a fading tile is half drawn in a screenshot
  });
  map.attributionControl.setPrefix(
    '<a href="https://leafletjs.com">Leaflet</a> | urbanfusion run ' + data.run_id);
  // A region's class tiles live in Leaflet's tile pane, under the overlay pane: its imagery
  // goes there too, below them (a tile layer's container stacks above a plain image).
  const imagery = L.imageOverlay(data.imagery, bounds,
    { alt: "imagery", pane: tiles ? "tilePane" : "overlayPane" }).addTo(map);
  let classes = null;
  const overlays = {};
  if (!tiles) {
    classes = L.imageOverlay(data.class_layer, bounds,
      { opacity: data.opacity, className: "uf-pixels", alt: "classes" }).addTo(map);
    overlays["Classes"] = classes;
  }
  if (data.changes_layer) {
    overlays["Changed since run " + data.previous_run + " (" + data.cells_changed + ")"] =
      L.imageOverlay(data.changes_layer, bounds, { className: "uf-pixels" }).addTo(map);
  }
  const layers = L.control.layers({ "Imagery": imagery }, overlays, { collapsed: false }).addTo(map);
  L.control.scale({ imperial: false }).addTo(map);
  map.fitBounds(bounds);

  // A region: the archive over HTTP(S) by range requests; from a disk, where a page may not
  // read the files beside it, the file the user picks, read in place.
  let archive = null;
  let classesReady = null;
  const tileBlocks = new Map(); // "x/y" -> Promise of a data tile's bytes
  function useArchive(source) {
    archive = new pmtiles.PMTiles(source);
    classes = pmtiles.leafletRasterLayer(archive, {
      maxNativeZoom: tiles.top_zoom, minNativeZoom: 0, tileSize: tiles.size, bounds: bounds,
      opacity: opacityNow(), className: "uf-pixels", noWrap: true,
    });
    classesReady = new Promise((resolve) => classes.once("load", resolve));
    classes.addTo(map);
    layers.addOverlay(classes, "Classes");
    if (current >= 0) show(current);
    classesReady.then(markReady);
  }
  function blockKey(row, col) {
    return Math.floor(col / tiles.size) + "/" + Math.floor(row / tiles.size);
  }
  function block(row, col) {
    const key = blockKey(row, col);
    const x = Math.floor(col / tiles.size), y = Math.floor(row / tiles.size);
    if (!tileBlocks.has(key)) {
      tileBlocks.set(key, archive.getZxy(tiles.data_zoom, x, y).then(async (got) => {
        if (!got) return null;
        const stream = new Blob([got.data]).stream().pipeThrough(new DecompressionStream("gzip"));
        return new Uint8Array(await new Response(stream).arrayBuffer());
      }));
    }
    return tileBlocks.get(key);
  }
  const loaded = new Map(); // "x/y" -> bytes, once its promise resolved
  // A cell's class, flags, previous class and probabilities; undefined while its tile loads.
  function details(i) {
    const row = Math.floor(i / data.cols), col = i % data.cols;
    if (!tiles) {
      return { c: classId[i], f: flags[i], prev: previous ? previous[i] : 255,
        p: prob.subarray(i * K, (i + 1) * K) };
    }
    if (!archive) return undefined;
    const key = blockKey(row, col);
    if (!loaded.has(key)) {
      block(row, col).then((bytes) => {
        loaded.set(key, bytes);
        if (current === i) show(i);
      }).catch((e) => console.error("map.pmtiles: " + e));
      return undefined;
    }
    const b = loaded.get(key);
    const N = tiles.size * tiles.size, j = (row % tiles.size) * tiles.size + (col % tiles.size);
    if (!b) return { c: 255, f: 0, prev: 255, p: new Uint8Array(K) };
    return { c: b[j], f: b[N + j], prev: b[2 * N + j], p: b.subarray(3 * N + j * K, 3 * N + (j + 1) * K) };
  }

  const legend = L.control({ position: "bottomright" });
  legend.onAdd = function () {
    const div = L.DomUtil.create("div", "uf-panel uf-legend");
    let html = "<h3>" + escapeHtml(data.title) + "</h3>";
    for (const c of data.classes) {
      html += '<div class="row"><span class="swatch" style="background:' + c.colour +
        '"></span>' + escapeHtml(c.label) + '<span class="count">' +
        c.count.toLocaleString("en") + "</span></div>";
    }
    html += '<div class="row"><span class="swatch" style="background:transparent"></span>' +
      'no prediction<span class="count">' + data.no_prediction.toLocaleString("en") +
      "</span></div>";
    html += '<label>Class opacity <input id="uf-opacity" type="range" min="0" max="100" value="' +
      Math.round(data.opacity * 100) + '"></label>';
    div.innerHTML = html;
    L.DomEvent.disableClickPropagation(div);
    L.DomEvent.disableScrollPropagation(div);
    div.querySelector("#uf-opacity").addEventListener("input", (event) => {
      if (classes) classes.setOpacity(Number(event.target.value) / 100);
    });
    return div;
  };
  legend.addTo(map);

  const info = L.control({ position: "topright" });
  info.onAdd = function () {
    this.div = L.DomUtil.create("div", "uf-panel uf-info");
    L.DomEvent.disableClickPropagation(this.div);
    this.div.innerHTML = '<span class="hint">Hover over a cell for its class, ' +
      "probabilities, inputs and weekly activity; click to pin it.</span>";
    return this.div;
  };
  info.addTo(map);

  function opacityNow() {
    const slider = document.getElementById("uf-opacity");
    return slider ? Number(slider.value) / 100 : data.opacity;
  }

  const outline = L.rectangle([[0, 0], [0, 0]], { color: "#000", weight: 2, fill: false });
  let pinned = -1;
  let current = -1;

  function cellAt(latlng) {
    const col = Math.floor(latlng.lng / size);
    const row = Math.floor((H - latlng.lat) / size);
    if (row < 0 || col < 0 || row >= data.rows || col >= data.cols) return -1;
    return row * data.cols + col;
  }

  function cellId(i) {
    const row = BigInt(Math.floor(i / data.cols) + data.abs_row0 + data.id_offset);
    const col = BigInt((i % data.cols) + data.abs_col0 + data.id_offset);
    return (row * BigInt(data.id_span) + col).toString();
  }

  function lonLat(i) {
    // Bilinear between the grid's corners: within metres over a city.
    const u = ((i % data.cols) + 0.5) / data.cols;
    const v = (Math.floor(i / data.cols) + 0.5) / data.rows;
    const [nw, ne, sw, se] = data.corners_lonlat;
    const lerp = (a, b, t) => a + (b - a) * t;
    const top = [lerp(nw[0], ne[0], u), lerp(nw[1], ne[1], u)];
    const bottom = [lerp(sw[0], se[0], u), lerp(sw[1], se[1], u)];
    return [lerp(top[0], bottom[0], v), lerp(top[1], bottom[1], v)];
  }

  function show(i) {
    current = i;
    if (i < 0) { map.removeLayer(outline); return; }
    const row = Math.floor(i / data.cols);
    const col = i % data.cols;
    const top = H - row * size;
    outline.setBounds([[top - size, col * size], [top, (col + 1) * size]]).addTo(map);
    const d = details(i);
    if (d === undefined) {
      info.div.innerHTML = '<span class="hint">' + (archive ? "reading cell " + row + ", " + col +
        " from " + tiles.file + "..." : "open " + tiles.file + " to see this cell") + "</span>";
      return;
    }
    const f = d.f;
    const inputs = [(f & 1) ? "imagery" : null, (f & 2) ? "signalling" : null].filter(Boolean);
    const [lon, lat] = lonLat(i);
    const rows = [["cell", cellId(i)], ["at", lon.toFixed(5) + ", " + lat.toFixed(5)],
      ["inputs", inputs.length ? inputs.join(" + ") : "none"]];
    const c = d.c;
    if (c < K) {
      const p = Array.from(d.p, (v) => v / 255);
      const order = p.map((v, k) => k).sort((a, b) => p[b] - p[a]);
      rows.unshift(["class", '<span class="uf-title">' + escapeHtml(data.classes[c].label) +
        "</span>"]);
      rows.push(["confidence", pct(p[order[0]]) + " (margin " + pct(p[order[0]] - p[order[1]]) +
        ")"]);
      rows.push(["top 3", order.slice(0, 3).map((k) =>
        escapeHtml(data.classes[k].label) + " " + pct(p[k])).join("<br>")]);
      if (f & 8) rows.push(["in domain", "no: unlike the model's training data"]);
    } else {
      rows.unshift(["class", "no prediction (no input)"]);
    }
    if (d.prev !== 255 && (f & 4)) {
      const before = d.prev < K ? data.classes[d.prev].label : "no prediction";
      rows.push(["changed", "was " + escapeHtml(before)]);
    }
    let html = "<table>" + rows.map((r) => "<tr><td>" + r[0] + "</td><td>" + r[1] +
      "</td></tr>").join("") + "</table>";
    const hasActivity = activity && (f & 2);
    if (hasActivity) html += '<canvas id="uf-week" width="280" height="90"></canvas>';
    else if (!activity && (f & 2)) html += '<span class="hint">' + data.activity_note + "</span>";
    if (pinned === i) html += '<span class="hint">pinned: click again to release</span>';
    info.div.innerHTML = html;
    if (hasActivity) drawWeek(info.div.querySelector("#uf-week"), i);
  }

  function drawWeek(canvas, i) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height - 14, values = activity.subarray(i * 168, i * 168 + 168);
    ctx.fillStyle = "#fafafa"; ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = "#ccc"; ctx.fillStyle = "#555"; ctx.font = "10px sans-serif";
    for (let d = 0; d < 7; d++) {
      const x = (d * 24 / 168) * w;
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
      ctx.fillText(DAYS[d], x + 2, h + 11);
    }
    ctx.strokeStyle = "#1f6fb2"; ctx.lineWidth = 1.5; ctx.beginPath();
    let drawing = false;
    for (let k = 0; k < 168; k++) {
      if (values[k] === 255) { drawing = false; continue; } // an hour never observed
      const x = ((k + 0.5) / 168) * w, y = h - (values[k] / 254) * (h - 4) - 2;
      if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      drawing = true;
    }
    ctx.stroke();
    ctx.fillStyle = "#333";
    ctx.fillText("peak " + Math.round(peak[i]).toLocaleString("en") + " / h", w - 78, 10);
  }

  function pct(v) { return (100 * v).toFixed(0) + " %"; }
  function escapeHtml(text) {
    return String(text).replace(/[&<>"]/g, (ch) =>
      ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]);
  }

  map.on("mousemove", (event) => { if (pinned < 0) show(cellAt(event.latlng)); });
  map.on("mouseout", () => { if (pinned < 0) show(-1); });
  map.on("click", (event) => {
    const i = cellAt(event.latlng);
    pinned = (i === pinned) ? -1 : i;
    show(i);
  });

  // For people and tests: the map is drawn once its images are decoded (a region's: the class
  // tiles in view too).
  const images = Promise.all((tiles ? [imagery] : [imagery, classes]).map((layer) =>
    new Promise((resolve) => {
      const img = layer.getElement();
      if (img.complete) resolve(); else img.addEventListener("load", resolve, { once: true });
    })));
  function markReady() {
    images.then(() => { document.body.dataset.ready = "1"; report(); });
  }
  if (!tiles) {
    markReady();
  } else if (window.location.protocol === "file:") {
    const ask = L.control({ position: "topleft" });
    ask.onAdd = function () {
      const div = L.DomUtil.create("div", "uf-panel uf-open");
      div.innerHTML = "This region's classes and cells are in <b>" + escapeHtml(tiles.file) +
        "</b> beside this page. A page opened from a disk may not read it by itself: choose " +
        'it here (it is read in place, nothing is sent), or open the page through a web server.' +
        '<br><input type="file" accept=".pmtiles">';
      L.DomEvent.disableClickPropagation(div);
      div.querySelector("input").addEventListener("change", (event) => {
        const file = event.target.files[0];
        if (file) { useArchive(new pmtiles.FileSource(file)); map.removeControl(ask); }
      });
      return div;
    };
    ask.addTo(map);
    document.body.dataset.needsArchive = "1";
    images.then(() => { document.body.dataset.ready = "1"; report(); });
  } else {
    useArchive(new URL(tiles.file, window.location.href).href);
  }
  // A link can point at a cell: map.html#cell=ROW,COL pins that cell's details on load.
  const wanted = /cell=(\d+),(\d+)/.exec(window.location.hash);
  if (wanted && Number(wanted[1]) < data.rows && Number(wanted[2]) < data.cols) {
    pinned = Number(wanted[1]) * data.cols + Number(wanted[2]);
    show(pinned);
  }
})();
