/* ravend-web's pages: every figure from the JSON API under /api/v1/, no inline script (a
   strict Content-Security-Policy holds), charts by Debian's Chart.js when it is there; a table
   behind every chart. The view, date and meter live in the address (#view=week&date=...). */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const VIEWS = ["now", "day", "week", "month", "year", "data", "device"];
  const state = { meters: [], meter: null, tz: "UTC", today: null, chart: null, source: null,
                  retryIn: 0, retryTimer: null };
  // A live view the browser gave up on (refused while every slot was taken, or the server
  // gone) is opened again after 2 s, then twice as long each time, 30 s at most.
  const RETRY_FIRST = 2000, RETRY_MOST = 30000;

  // --- the address -----------------------------------------------------------------------
  function params() { return new URLSearchParams(location.hash.slice(1)); }
  function go(changes) {
    const p = params();
    for (const [k, v] of Object.entries(changes)) { if (v == null) p.delete(k); else p.set(k, v); }
    location.hash = p.toString();
  }
  function meterQuery(sep) { return state.meter ? sep + "meter=" + encodeURIComponent(state.meter) : ""; }

  async function getJSON(path) {
    const r = await fetch(path, { headers: { Accept: "application/json" } });
    if (!r.ok) {
      let message = r.status + " " + r.statusText;
      try { message = (await r.json()).error || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return r.json();
  }
  function fail(error) { const p = $("error"); p.textContent = String(error.message || error); p.hidden = false; }

  // --- dates: YYYY-MM-DD strings, arithmetic on UTC date parts (no time zone involved) -------
  function ymd(d) { return d.toISOString().slice(0, 10); }
  function parseDay(s) { const [y, m, d] = s.split("-").map(Number); return new Date(Date.UTC(y, m - 1, d)); }
  function addDays(s, n) { const d = parseDay(s); d.setUTCDate(d.getUTCDate() + n); return ymd(d); }
  function addMonths(s, n) { const d = parseDay(s); return ymd(new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + n, 1))); }
  function todayIn(tz) {
    try {
      return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
    } catch (e) { return ymd(new Date()); }
  }
  function period(view, date) {
    if (view === "day") return { start: date, end: addDays(date, 1), resolution: "hourly", label: date, move: (n) => addDays(date, n) };
    if (view === "week") {
      const start = addDays(date, -((parseDay(date).getUTCDay() + 6) % 7));
      return { start, end: addDays(start, 7), resolution: "daily", label: "week of " + start, move: (n) => addDays(start, 7 * n) };
    }
    if (view === "month") {
      const start = date.slice(0, 8) + "01";
      return { start, end: addMonths(start, 1), resolution: "daily", label: start.slice(0, 7), move: (n) => addMonths(start, n) };
    }
    const year = Number(date.slice(0, 4));
    return { start: year + "-01-01", end: (year + 1) + "-01-01", resolution: "monthly", label: String(year), move: (n) => (year + n) + "-01-01" };
  }

  // --- numbers ---------------------------------------------------------------------------
  function num(v) { return v == null ? null : Number(v); }
  function fixed(v, places) { return v == null ? "–" : Number(v).toFixed(places); }
  function money(v, currency) { return v == null ? "–" : Number(v).toFixed(2) + (currency ? " " + currency : ""); }
  function fill(dl, rows) {
    dl.replaceChildren();
    for (const [name, value] of rows) {
      const dt = document.createElement("dt"); dt.textContent = name;
      const dd = document.createElement("dd"); dd.textContent = value;
      dl.append(dt, dd);
    }
  }
  function energyRows(e) {
    if (!e) return [["kWh in", "–"], ["kWh out", "–"], ["cost", "–"]];
    return [["kWh in", fixed(e.delivered_kwh, 3)], ["kWh out", fixed(e.received_kwh, 3)],
            ["cost", money(e.cost, e.currency)], ["after credit", money(e.net_cost, e.currency)]];
  }
  function age(seconds) {
    if (seconds == null) return "–";
    const s = Math.round(seconds);
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }
  function ready(what) { document.body.dataset.ready = what; }

  // --- Now: pushed by the server (Server-Sent Events) -------------------------------------
  function showNow(body) {
    const kw = body.demand_kw;
    $("demand").textContent = kw == null ? "–" : (kw < 0 ? "−" + Math.abs(kw).toFixed(3) : "+" + Number(kw).toFixed(3));
    const direction = $("direction");
    direction.className = "direction" + (body.direction ? " " + body.direction : "");
    direction.textContent = body.direction === "export" ? "exporting to the grid"
      : body.direction === "import" ? "importing from the grid" : "no demand reading yet";
    fill($("today"), energyRows(body.today));
    fill($("month"), energyRows(body.month));
    const link = body.link || {};
    fill($("status"), [
      ["last reading", age(body.last_reading_age_s)],
      ["link", link.link_strength == null ? "–" : link.link_strength + " %"],
      ["status", link.status || "–"],
      ["ravend", body.service.running ? "running" : "not running"],
    ]);
    const down = $("down");
    const parts = body.service.down || [];
    down.hidden = body.service.running && parts.length === 0;
    down.textContent = !body.service.running ? "ravend is not running" : "down: " + parts.join(", ");
    $("now").dataset.newestId = String(body.newest_id);
    $("now").dataset.meter = body.meter_mac || "";
    ready("now:" + (body.meter_mac || "") + ":" + body.newest_id);
  }
  function streamState(what, text) {
    $("now").dataset.stream = what;
    const p = $("stream-state");
    p.textContent = text || "";
    p.hidden = !text;
    if (what === "reconnecting" && !$("now").dataset.newestId) $("direction").textContent = "not connected yet";
  }
  function openStream() {
    closeStream();
    const source = new EventSource("/api/v1/now/stream" + meterQuery("?"));
    source.addEventListener("now", (e) => {
      state.retryIn = 0;
      streamState("live", "");
      showNow(JSON.parse(e.data));
    });
    source.addEventListener("error", () => {
      if (state.source !== source) return;
      if (source.readyState !== EventSource.CLOSED) {
        // The stream ended (ravend-web restarting?): the browser tries again by itself.
        streamState("reconnecting", "reconnecting\u2026");
        return;
      }
      // Refused (every live view slot taken, or no ravend-web): the browser has given up.
      closeStream();
      state.retryIn = state.retryIn ? Math.min(2 * state.retryIn, RETRY_MOST) : RETRY_FIRST;
      streamState("reconnecting", "reconnecting\u2026 (next try in " + Math.round(state.retryIn / 1000) + " s)");
      state.retryTimer = setTimeout(openStream, state.retryIn);
    });
    state.source = source;
    if ($("now").dataset.stream !== "reconnecting") streamState("connecting", "");
  }
  function closeStream() {
    if (state.retryTimer) { clearTimeout(state.retryTimer); state.retryTimer = null; }
    if (state.source) { state.source.close(); state.source = null; }
  }

  // --- Day, Week, Month, Year: roll-ups as bars and lines, and the same as a table -----------
  function pointLabel(p, resolution) {
    if (resolution !== "hourly") return p.day;
    try {
      return new Intl.DateTimeFormat("en-GB", { timeZone: state.tz, hour: "2-digit", minute: "2-digit" }).format(new Date(p.start * 1000));
    } catch (e) { return new Date(p.start * 1000).toISOString().slice(11, 16); }
  }
  function sum(points, name) {
    const known = points.filter((p) => p[name] != null);
    return known.length ? known.reduce((a, p) => a + Number(p[name]), 0) : null;
  }
  function color(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function drawChart(labels, points, before) {
    if (state.chart) { state.chart.destroy(); state.chart = null; }
    if (typeof Chart === "undefined") return; // the table below holds every figure
    const datasets = [
      { type: "bar", label: "kWh in", data: points.map((p) => num(p.delivered_kwh)), backgroundColor: color("--import"), yAxisID: "kwh", order: 2 },
      { type: "bar", label: "kWh out", data: points.map((p) => p.received_kwh == null ? null : -Number(p.received_kwh)), backgroundColor: color("--export"), yAxisID: "kwh", order: 2 },
      { type: "line", label: "average kW", data: points.map((p) => num(p.demand_avg_kw)), borderColor: color("--accent"), backgroundColor: color("--accent"), yAxisID: "kw", spanGaps: false, pointRadius: 2, order: 1 },
      { type: "line", label: "peak kW", data: points.map((p) => num(p.demand_max_kw)), borderColor: color("--muted"), backgroundColor: color("--muted"), borderDash: [4, 3], yAxisID: "kw", spanGaps: false, pointRadius: 2, order: 1 },
    ];
    if (before) {
      datasets.push({ type: "bar", label: "kWh in, period before", data: points.map((_, i) => before[i] ? num(before[i].delivered_kwh) : null), backgroundColor: color("--line"), yAxisID: "kwh", order: 3 });
    }
    const grid = color("--line"), text = color("--muted");
    state.chart = new Chart($("chart"), {
      data: { labels, datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { labels: { color: text, boxWidth: 12 } } },
        scales: {
          x: { ticks: { color: text, maxRotation: 0, autoSkip: true }, grid: { color: grid } },
          kwh: { position: "left", title: { display: true, text: "kWh", color: text }, ticks: { color: text }, grid: { color: grid } },
          kw: { position: "right", title: { display: true, text: "kW", color: text }, ticks: { color: text }, grid: { drawOnChartArea: false } },
        },
      },
    });
  }
  function fillTable(labels, points) {
    const body = $("table").tBodies[0];
    body.replaceChildren();
    points.forEach((p, i) => {
      const tr = document.createElement("tr");
      tr.dataset.start = String(p.start);
      if (p.gap) tr.className = "gap";
      const th = document.createElement("th"); th.scope = "row"; th.textContent = labels[i];
      tr.append(th);
      for (const text of [fixed(p.delivered_kwh, 3), fixed(p.received_kwh, 3), money(p.cost),
                          fixed(p.demand_avg_kw, 3), fixed(p.demand_max_kw, 3),
                          p.gap ? "gap: no reading" : ""]) {
        const td = document.createElement("td"); td.textContent = text; tr.append(td);
      }
      body.append(tr);
    });
  }
  async function showPeriod(view, date) {
    const p = period(view, date);
    $("period-title").textContent = view[0].toUpperCase() + view.slice(1);
    $("period-label").textContent = p.label;
    const query = (start, end) => "/api/v1/rollups?resolution=" + p.resolution + "&start=" + start + "&end=" + end + meterQuery("&");
    const answer = await getJSON(query(p.start, p.end));
    state.tz = answer.time_zone || state.tz;
    const points = answer.points;
    const labels = points.map((x) => pointLabel(x, p.resolution));
    let before = null;
    const compare = $("compare").checked;
    if (compare) {
      const q = period(view, p.move(-1));
      before = (await getJSON(query(q.start, q.end))).points;
    }
    drawChart(labels, points, before);
    fillTable(labels, points);
    $("table-caption").textContent = "Energy, cost and demand, " + p.label + " (" + state.tz + ")";
    const currency = (points.find((x) => x.currency) || {}).currency;
    let totals = "In " + fixed(sum(points, "delivered_kwh"), 3) + " kWh, out " + fixed(sum(points, "received_kwh"), 3) +
      " kWh, cost " + money(sum(points, "cost"), currency);
    const gaps = points.filter((x) => x.gap).length;
    if (gaps) totals += "; " + gaps + (gaps === 1 ? " period" : " periods") + " without any reading";
    if (before) totals += ". The period before: in " + fixed(sum(before, "delivered_kwh"), 3) + " kWh, cost " + money(sum(before, "cost"), currency);
    $("totals").textContent = totals;
    $("prev").onclick = () => go({ date: p.move(-1) });
    $("next").onclick = () => go({ date: p.move(1) });
    ready(view + ":" + p.start + ":" + (state.meter || "") + (compare ? ":compare" : ""));
  }

  // --- Data and Device -------------------------------------------------------------------
  function showData() {
    if (!$("data-start").value) $("data-start").value = addDays(state.today, -6);
    if (!$("data-end").value) $("data-end").value = addDays(state.today, 1);
    const update = () => {
      for (const format of ["csv", "jsonl"]) {
        $("download-" + format).href = "/api/v1/readings?format=" + format + "&rollup=" + $("data-rollup").value +
          "&start=" + $("data-start").value + "&end=" + $("data-end").value + meterQuery("&");
      }
    };
    for (const id of ["data-start", "data-end", "data-rollup"]) $(id).onchange = update;
    update();
    ready("data");
  }
  async function showDevice() {
    const d = await getJSON("/api/v1/device" + meterQuery("?"));
    const rows = [];
    for (const [k, v] of Object.entries(d.device_info || {})) rows.push([k.replace(/_/g, " "), String(v)]);
    const link = d.link || {};
    rows.push(["link strength", link.link_strength == null ? "–" : link.link_strength + " %"]);
    rows.push(["link status", link.status || "–"]);
    rows.push(["price", d.price ? d.price.price + " " + (d.price.unit || "") : "–"]);
    rows.push(["meters", d.meters.join(", ") || "–"]);
    const body = $("device-table").tBodies[0];
    body.replaceChildren();
    for (const [name, value] of rows) {
      const tr = document.createElement("tr");
      const th = document.createElement("th"); th.scope = "row"; th.textContent = name;
      const td = document.createElement("td"); td.textContent = value;
      tr.append(th, td); body.append(tr);
    }
    ready("device");
  }

  // --- routing ---------------------------------------------------------------------------
  async function route() {
    const p = params();
    const view = VIEWS.includes(p.get("view")) ? p.get("view") : "now";
    const meter = p.get("meter");
    state.meter = state.meters.includes(meter) ? meter : (state.meters[0] || null);
    $("meter").value = state.meter || "";
    $("compare").checked = p.get("compare") === "1";
    for (const a of document.querySelectorAll("#views a")) {
      if (a.dataset.view === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
      const q = new URLSearchParams(p); q.set("view", a.dataset.view); a.href = "#" + q.toString();
    }
    $("now").hidden = view !== "now";
    $("period").hidden = !["day", "week", "month", "year"].includes(view);
    $("data").hidden = view !== "data";
    $("device").hidden = view !== "device";
    $("error").hidden = true;
    if (view !== "now") { closeStream(); state.retryIn = 0; }
    try {
      if (view === "now") openStream();
      else if (view === "data") showData();
      else if (view === "device") await showDevice();
      else await showPeriod(view, p.get("date") || state.today);
    } catch (e) { fail(e); }
  }

  async function start() {
    try {
      const [meters, now] = await Promise.all([getJSON("/api/v1/meters"), getJSON("/api/v1/now")]);
      state.meters = meters.meters;
      state.tz = now.time_zone || "UTC";
      state.today = todayIn(state.tz);
    } catch (e) { fail(e); state.today = ymd(new Date()); }
    const select = $("meter");
    for (const mac of state.meters) {
      const option = document.createElement("option"); option.value = mac; option.textContent = mac; select.append(option);
    }
    $("meter-choice").hidden = state.meters.length < 2;
    select.onchange = () => go({ meter: select.value });
    $("compare").onchange = () => go({ compare: $("compare").checked ? "1" : null });
    window.addEventListener("hashchange", route);
    await route();
  }
  document.addEventListener("DOMContentLoaded", start);
})();
