/* The portal's small helpers: times in the viewer's zone (UTC stays in the title), and charts drawn
 * from the JSON next to each canvas (every chart's figures are also in a table on the page). */
(function () {
  "use strict";
  const dateTime = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
  const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

  function localTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]")) {
      if (el.dataset.local) continue;
      const when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) continue;
      el.textContent = (el.dataset.style === "time" ? timeOnly : dateTime).format(when);
      el.dataset.local = "true";
    }
  }

  function label(iso) {
    return timeOnly.format(new Date(iso));
  }

  const DASH = [6, 4];
  const builders = {
    "plan-chart": function (d) {
      return {
        data: {
          labels: d.labels.map(label),
          datasets: [
            { type: "bar", label: "Charging (kW)", data: d.charge_kw, backgroundColor: "#1f6fb2", stack: "p" },
            { type: "bar", label: "Discharging (kW)", data: d.discharge_kw, backgroundColor: "#e08a00", stack: "p" },
            { type: "line", label: "Import limit (kW)", data: d.import_limit_kw, borderColor: "#333", borderDash: DASH, pointRadius: 0, stepped: true },
            { type: "line", label: "Export limit (kW, below zero)", data: d.export_limit_kw, borderColor: "#777", borderDash: [2, 2], pointRadius: 0, stepped: true },
            { type: "line", label: "Price (EUR/MWh, right axis)", data: d.price_eur_mwh, borderColor: "#8a2be2", pointRadius: 0, stepped: true, yAxisID: "price" },
          ],
        },
        scales: { y: { title: { display: true, text: "kW" }, stacked: true }, x: { stacked: true }, price: { position: "right", title: { display: true, text: "EUR/MWh" }, grid: { drawOnChartArea: false } } },
      };
    },
    "session-chart": function (d) {
      const sets = [
        { type: "bar", label: "Charge (kWh, " + d.energy_label + ")", data: d.charge_kwh, backgroundColor: "#1f6fb2", stack: "e" },
        { type: "bar", label: "Discharge (kWh, " + d.energy_label + ")", data: d.discharge_kwh, backgroundColor: "#e08a00", stack: "e" },
      ];
      if (d.metered_charge_kwh.some((v) => v !== null)) {
        sets.push({ type: "line", label: "Metered charge (kWh)", data: d.metered_charge_kwh, borderColor: "#000", pointStyle: "crossRot", pointRadius: 4, showLine: false });
        sets.push({ type: "line", label: "Metered discharge (kWh)", data: d.metered_discharge_kwh, borderColor: "#000", pointStyle: "triangle", pointRadius: 4, showLine: false });
      }
      if (d.amount_eur.some((v) => v !== null)) sets.push({ type: "line", label: "Amount (EUR, right axis)", data: d.amount_eur, borderColor: "#2e7d32", borderDash: DASH, pointRadius: 2, yAxisID: "eur" });
      return {
        data: { labels: d.labels.map(label), datasets: sets },
        scales: { y: { title: { display: true, text: "kWh" }, stacked: true }, x: { stacked: true }, eur: { position: "right", title: { display: true, text: "EUR" }, grid: { drawOnChartArea: false } } },
      };
    },
  };

  function charts() {
    if (typeof Chart === "undefined") return;
    for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
      const source = document.getElementById(canvas.id + "-data");
      const build = builders[canvas.dataset.chart];
      if (!source || !build) continue;
      const spec = build(JSON.parse(source.textContent));
      canvas.chart = new Chart(canvas, {
        data: spec.data,
        options: {
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          interaction: { mode: "index", intersect: false },
          scales: spec.scales,
          plugins: { legend: { position: "bottom" } },
        },
      });
      canvas.dataset.drawn = "true";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    charts();
  });
  document.addEventListener("htmx:afterSwap", function (e) {
    localTimes(e.target);
  });
})();
