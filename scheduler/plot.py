"""Plot a schedule: prices, fleet charge and discharge, the site limits and the fleet's SoC band."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from scheduler.index import ModelIndex
from scheduler.schedule import Schedule


def plot_schedule(schedule: Schedule, idx: ModelIndex, path: Path | str) -> Path:
    """Write a three-panel PNG to ``path`` and return it."""
    path = Path(path)
    times = schedule.timestamps
    fig, (ax_p, ax_kw, ax_soc) = plt.subplots(3, 1, figsize=(11, 9), sharex=True, constrained_layout=True)

    ax_p.step(times, idx.buy_eur_mwh, where="post", label="buy", color="black")
    if not np.array_equal(idx.buy_eur_mwh, idx.sell_eur_mwh):
        ax_p.step(times, idx.sell_eur_mwh, where="post", label="sell", color="grey", linestyle="--")
    ax_p.axhline(0, color="grey", linewidth=0.5)
    ax_p.set_ylabel("EUR/MWh")
    ax_p.set_title(f"Day-ahead price and {schedule.strategy} schedule ({len(schedule.session_ids)} sessions)")
    ax_p.legend(loc="upper right")

    charge = schedule.charge_kw.sum(axis=0)
    discharge = schedule.discharge_kw.sum(axis=0)
    width = schedule.dt_h / 24 * 0.9
    ax_kw.bar(times, charge, width=width, align="edge", label="charge", color="tab:blue")
    ax_kw.bar(times, -discharge, width=width, align="edge", label="discharge (V2G)", color="tab:orange")
    ax_kw.step(times, idx.import_limit_kw, where="post", color="red", label="site import limit")
    ax_kw.step(
        times, -idx.export_limit_kw, where="post", color="darkred", linestyle="--", label="site export limit"
    )
    ax_kw.step(times, schedule.import_kw - schedule.export_kw, where="post", color="black", label="net grid")
    ax_kw.set_ylabel("kW")
    ax_kw.legend(loc="upper right", fontsize="small")

    plugged = ~np.isnan(schedule.soc_kwh)
    lo = np.where(plugged, idx.soc_lo_kwh[:, None], 0.0).sum(axis=0)
    hi = np.where(plugged, idx.soc_hi_kwh[:, None], 0.0).sum(axis=0)
    soc = np.nansum(schedule.soc_kwh, axis=0)
    ax_soc.fill_between(times, lo, hi, step="post", alpha=0.25, label="SoC band of plugged vehicles")
    ax_soc.step(times, soc, where="post", color="tab:green", label="fleet energy")
    ax_soc.set_ylabel("kWh")
    ax_soc.set_xlabel("UTC")
    ax_soc.legend(loc="upper right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
