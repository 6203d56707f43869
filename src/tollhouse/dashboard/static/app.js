// Tollhouse dashboard: the few things HTML and htmx do not do. No inline script runs
// (the page's Content-Security-Policy forbids it): charts read their data from
// <script type="application/json"> blocks.
(function () {
  "use strict";

  function money(v) {
    return "$" + (Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3));
  }

  var PALETTE = ["#1f5fbf", "#c62828", "#1a7f37", "#9a6700", "#8250df", "#0a7ea4",
                 "#bf3989", "#57606a", "#6e7781"];

  function drawChart() {
    var holder = document.getElementById("chart");
    var source = document.getElementById("chart-data");
    if (!holder || !source || typeof uPlot === "undefined") return;
    var data = JSON.parse(source.textContent);
    var isMoney = data.metric === "cost";
    var series = [{ label: "time (UTC)" }];
    var columns = [data.x];
    data.series.forEach(function (s, i) {
      series.push({
        label: s.label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        value: function (u, v) { return v == null ? "—" : (isMoney ? money(v) : v.toLocaleString()); },
      });
      columns.push(s.values);
    });
    var width = Math.max(280, holder.clientWidth);
    var options = {
      width: width,
      height: 320,
      series: series,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      axes: [{}, { size: 70, values: function (u, vals) {
        return vals.map(function (v) { return isMoney ? money(v) : v.toLocaleString(); });
      } }],
      scales: { x: { time: true } },
    };
    holder.textContent = "";
    var plot = new uPlot(options, columns, holder);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(280, holder.clientWidth), height: 320 });
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target instanceof Element && target.closest("[data-close-drawer]")) {
      document.getElementById("drawer").textContent = "";
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      var drawer = document.getElementById("drawer");
      if (drawer) drawer.textContent = "";
    }
  });
  document.addEventListener("DOMContentLoaded", drawChart);

  // A session's events as they are written: Server-Sent Events, each with the log's
  // event id as its id, so that EventSource, reconnecting on its own, resumes with
  // Last-Event-ID exactly after the last row appended (the server sends none twice).
  function followSession() {
    var rows = document.querySelector("[data-session-stream]");
    if (!rows || typeof EventSource === "undefined") return;
    var state = document.getElementById("stream-state");
    var source = new EventSource(rows.getAttribute("data-session-stream"));
    function say(text) { if (state) state.textContent = text; }
    source.onopen = function () { say("Live: following new events"); };
    source.onerror = function () {
      say(source.readyState === EventSource.CLOSED ? "Live: stopped (reload the page)"
                                                   : "Live: reconnecting…");
    };
    source.onmessage = function (message) {
      var e = JSON.parse(message.data);
      var tr = document.createElement("tr");
      tr.setAttribute("data-testid", "event-row");
      tr.setAttribute("data-seq", String(e.seq));
      tr.setAttribute("data-event-id", e.event_id);
      tr.className = "fresh";
      var cells = [String(e.seq), e.created_at.slice(0, 19).replace("T", " "), e.kind, e.type,
                   e.summary];
      cells.forEach(function (text, i) {
        var td = document.createElement("td");
        td.textContent = text;  // never markup: an event's text is whatever the model said
        if (i === 0) td.className = "num";
        if (i === 4) td.className = "summary";
        tr.appendChild(td);
      });
      rows.appendChild(tr);
    };
    window.addEventListener("pagehide", function () { source.close(); });
  }
  document.addEventListener("DOMContentLoaded", followSession);
})();
