"""The scaling-curve figure: one panel per task, one line per encoder over data size (log x),
95% CIs shaded, each encoder's baseline (its init, size 0) dashed, fitted power laws overlaid
(or "no law fitted" and why), the crossover with the baseline marked with its CI.

Reads only the status (``results`` and ``fits``), so a PNG can be drawn for any study, running or
done, local or on a cluster. matplotlib is imported here only (Agg backend, no display needed).
"""

from __future__ import annotations

import io
import math

import numpy as np

from radscale.operator import api, fits, results


def _law(fit: api.FitStatus, metric: str, sizes: np.ndarray) -> np.ndarray:
    err = fit.a * sizes ** (-fit.b) + fit.c
    return fits.from_error(metric, err)


def _mark_crossover(ax, fit: api.FitStatus, colour: str, enc: str, row: int, right: float) -> None:
    """The crossover along the panel's foot: a tick at the size, a bar over its CI (an arrow when
    unbounded), '≤' at the smallest size and dash-dotted when extrapolated; named in the legend."""
    import matplotlib.transforms as mtransforms

    c = fit.crossover
    label = f"{enc} beats baseline: {results.crossover_text(c)}"
    if c.size is None:
        ax.plot([], [], " ", label=label)
        return
    foot = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    y = 0.04 + 0.05 * row
    if c.ci95 is not None:
        hi = right if c.ci95.high is None else c.ci95.high
        ax.plot([c.ci95.low, hi], [y, y], color=colour, lw=2.5, alpha=0.5, transform=foot, solid_capstyle="butt")
        if c.ci95.high is None:
            ax.plot([hi], [y], marker=">", color=colour, alpha=0.7, transform=foot)
    ax.plot([c.size], [y], marker="|", ms=12, mew=2, color=colour, transform=foot,
            ls="-." if c.extrapolated else "-", label=label)


def render_png(status: api.ScalingStudyStatus, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = [(task, metric, by_enc) for task, by_metric in sorted(status.results.items())
              for metric, by_enc in sorted(by_metric.items())]
    cols = min(len(panels), 2) or 1
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    encoders = sorted({e for _, _, by_enc in panels for e in by_enc})
    fit_of = {(f.task, f.metric, f.encoder): f for f in status.fits}
    for ax, (task, metric, by_enc) in zip(axes.flat, panels, strict=False):
        for enc, pts in sorted(by_enc.items()):
            colour = colours[encoders.index(enc) % len(colours)]
            grid = np.array([p for p in pts if p[0] > 0], dtype=float).reshape(-1, 4)
            base = [p for p in pts if p[0] == 0]
            if len(grid):
                ax.plot(grid[:, 0], grid[:, 1], "o-", color=colour, label=enc, lw=1.6, ms=5)
                ax.fill_between(grid[:, 0], grid[:, 2], grid[:, 3], color=colour, alpha=0.18, lw=0)
            if base:
                ax.axhline(base[0][1], color=colour, ls="--", lw=1.2, label=f"{enc} baseline (init)")
            fit = fit_of.get((task, metric, enc))
            if fit is not None and fit.fitted and len(grid):
                xs = np.geomspace(grid[:, 0].min(), grid[:, 0].max(), 100)
                ax.plot(xs, _law(fit, metric, xs), ":", color=colour, lw=1.4,
                        label=f"{enc} fit: {fit.a:.3g}·N^-{fit.b:.2f}+{fit.c:.3f} (R² {fit.r2:.2f})")
            elif fit is not None and len(grid):
                ax.plot([], [], " ", label=f"{enc}: no law fitted ({fit.lack_of_fit})")
            if fit is not None and base and len(grid):
                _mark_crossover(ax, fit, colour, enc, encoders.index(enc), float(grid[:, 0].max()))
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.set_xlabel("pretraining images (N)")
        ax.set_ylabel(metric)
        ax.set_title(task)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
