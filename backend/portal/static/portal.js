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

  /* Two axes with one zero line: each axis's range stretched so that zero sits at the same height. */
  function zeroAligned(scales, left, leftData, right, rightData) {
    function range(series) {
      let lo = 0, hi = 0;
      for (const s of series) for (const v of s || []) if (v !== null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      return [lo, hi];
    }
    let [a0, a1] = range(leftData), [b0, b1] = range(rightData);
    if (a1 - a0 === 0 || b1 - b0 === 0) return scales;
    const below = Math.max(-a0 / (a1 - a0), -b0 / (b1 - b0)); // the share of the height under zero
    if (below > 0 && below < 1) {
      a0 = Math.min(a0, -below / (1 - below) * a1); a1 = Math.max(a1, -(1 - below) / below * a0);
      b0 = Math.min(b0, -below / (1 - below) * b1); b1 = Math.max(b1, -(1 - below) / below * b0);
    }
    Object.assign(scales[left], { min: a0 * 1.05, max: a1 * 1.05 });
    Object.assign(scales[right], { min: b0 * 1.05, max: b1 * 1.05 });
    return scales;
  }

  /* A shortened hash or address gets a button that copies it whole. */
  function copyButtons(root) {
    for (const el of root.querySelectorAll("code.hex[title]")) {
      if (el.dataset.copy) continue;
      el.dataset.copy = "true";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy " + el.getAttribute("title"));
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(el.getAttribute("title")).then(
          function () { button.textContent = "Copied"; },
          function () { button.textContent = "Select and copy"; }
        );
      });
      el.after(button);
    }
  }
  const builders = {
    "plan-chart": function (d) {
      return {
        data: {
          labels: d.labels.map(label),
          datasets: [
            { type: "bar", label: "Charging (kW)", data: d.charge_kw, backgroundColor: "#1f6fb2", stack: "p", order: 3 },
            { type: "bar", label: "Discharging (kW)", data: d.discharge_kw, backgroundColor: "#e08a00", stack: "p", order: 3 },
            { type: "line", label: "Import limit (kW)", data: d.import_limit_kw, borderColor: "#333", borderDash: DASH, pointRadius: 0, stepped: true },
            { type: "line", label: "Export limit (kW, below zero)", data: d.export_limit_kw, borderColor: "#777", borderDash: [2, 2], pointRadius: 0, stepped: true },
            { type: "line", label: "Price (EUR/MWh, right axis)", data: d.price_eur_mwh, borderColor: "#8a2be2", borderWidth: 2.5, pointRadius: 0, stepped: true, yAxisID: "price", order: 0 },
          ],
        },
        scales: zeroAligned(
          { y: { title: { display: true, text: "kW" }, stacked: true }, x: { stacked: true }, price: { position: "right", title: { display: true, text: "EUR/MWh" }, grid: { drawOnChartArea: false } } },
          "y", [d.charge_kw, d.import_limit_kw, d.discharge_kw, d.export_limit_kw], "price", [d.price_eur_mwh]),
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
        scales: zeroAligned(
          { y: { title: { display: true, text: "kWh" }, stacked: true }, x: { stacked: true }, eur: { position: "right", title: { display: true, text: "EUR" }, grid: { drawOnChartArea: false } } },
          "y", [d.charge_kwh, d.discharge_kwh, d.metered_charge_kwh, d.metered_discharge_kwh], "eur", [d.amount_eur]),
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
    copyButtons(document);
    charts();
  });
  document.addEventListener("htmx:afterSwap", function (e) {
    localTimes(e.target);
    copyButtons(e.target);
  });
})();
