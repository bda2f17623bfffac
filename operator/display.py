"""What ``radscale run`` shows while a study runs, and the tables it prints at the end.

On a terminal: a live panel (rich) with a bar of cells by state and one row per running cell
(stage, attempt, step/ETA from the job's progress lines), with Events printed above it as they
happen. Elsewhere (CI logs, pipes): one plain line per Event. The final results table and the fitted
laws are plain rich tables either way.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from radscale.cells import CellResult
from radscale.operator import api, reconcile, results
from radscale.operator.local import LocalCluster, _tail, progress_of


def _clock() -> str:
    return time.strftime("%H:%M:%S")


class Display:
    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or Console(stderr=False)
        self.live_mode = self.console.is_terminal if live is None else live
        self._live: Live | None = None

    # -- during the run --------------------------------------------------------------------------
    def note(self, text: str) -> None:
        self._print(f"{_clock()} {text}")

    def event(self, ev: reconcile.Event) -> None:
        style = "red" if ev.type == "Warning" else ""
        self._print(Text(f"{_clock()} {ev.reason}: {ev.message}", style=style))

    def _print(self, what: Any) -> None:
        if self._live is not None:
            self._live.console.print(what)
        else:
            self.console.print(what, soft_wrap=True, highlight=False)

    def update(self, status: api.ScalingStudyStatus, cluster: LocalCluster) -> None:
        if not self.live_mode:
            return
        if self._live is None:
            self._live = Live(console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        self._live.update(self.panel(status, cluster))

    def panel(self, status: api.ScalingStudyStatus, cluster: LocalCluster) -> Group:
        c = status.cells
        bar = ProgressBar(total=max(c.total, 1), completed=c.succeeded + c.failed, width=40)
        head = Text(f" {status.phase}  {c.succeeded}/{c.total} succeeded, {c.running} running, "
                    f"{c.pending} pending, {c.failed} failed")
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for col in ("cell", "stage", "try", "progress", "ETA", "note"):
            table.add_column(col)
        for cs in [status.prepare, *status.cell_status]:
            if cs is None or cs.state is not api.CellState.RUNNING or not cs.ray_job:
                continue
            child = cluster.children.get(cs.ray_job)
            prog = progress_of(_tail(child.log)) if child else None
            done, total, eta, note = 0, 0, "", ""
            if prog:
                done, total = int(prog.get("done", 0)), int(prog.get("total", 0))
                note = prog.get("task", "") or (f"loss {prog['loss']}" if "loss" in prog else "")
                elapsed = time.monotonic() - child.started
                if 0 < done < total:
                    eta = f"{elapsed / done * (total - done):.0f}s"
            cell_bar = ProgressBar(total=max(total, 1), completed=done, width=20) if total else Text("starting")
            table.add_row(cs.name, str(cs.stage), str(cs.attempts), cell_bar, eta, note)
        top = Table.grid(padding=(0, 1))
        top.add_row(bar, head)
        return Group(top, table)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- at the end -----------------------------------------------------------------------------------
    def finish(self, study: api.ScalingStudy, status: api.ScalingStudyStatus, results: dict[str, CellResult]) -> None:
        self.stop()
        for table in tables(study, status):
            self.console.print(table)
        failed = [cs for cs in status.cell_status if cs.state is api.CellState.FAILED]
        for cs in failed:
            self.console.print(Text(f"FAILED {cs.name}: {cs.message}", style="red"))
        self.console.print(f"phase {status.phase}: {status.progress} cells succeeded; best encoder: {status.best}")
        if status.artifacts.plot:
            self.console.print(f"scaling curves: {status.artifacts.plot}")
            self.console.print(f"all results: {status.artifacts.results}")
        if status.mlflow.url:
            self.console.print(f"MLflow: {status.mlflow.url} (experiment {status.mlflow.experiment})")


def _fmt(point: list[float]) -> str:
    v, lo, hi = point[1], point[2], point[3]
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if (lo, hi) != (v, v) else f"{v:.3f}"


def tables(study: api.ScalingStudy, status: api.ScalingStudyStatus) -> list[Table]:
    """Headline metric per task x encoder x size (95% CI), then the fitted laws."""
    sizes = sorted({int(p[0]) for by_m in status.results.values() for by_e in by_m.values()
                    for pts in by_e.values() for p in pts})
    out = []
    res = Table(title=f"{study.metadata.name}: headline metric on the test split [95% CI]")
    res.add_column("task")
    res.add_column("encoder")
    for n in sizes:
        res.add_column("baseline" if n == 0 else f"{n:,}", justify="right")
    for task, by_metric in sorted(status.results.items()):
        for metric, by_enc in sorted(by_metric.items()):
            for enc, pts in sorted(by_enc.items()):
                at = {int(p[0]): p for p in pts}
                res.add_row(f"{task} ({metric})", enc, *(_fmt(at[n]) if n in at else "-" for n in sizes))
    out.append(res)
    if status.fits:
        fit = Table(title="fitted laws: error(N) = a * N^-b + c  (error = 1 - metric) [95% CI]")
        for col in ("task", "encoder", "law", "b", "c", "R²", "reps", "beats baseline at N"):
            fit.add_column(col, justify="left" if col in ("task", "encoder", "law") else "right")
        for f in status.fits:
            if f.fitted:
                law: str | Text = f"{f.a:.3g}·N^-{f.b:.3f} + {f.c:.3f}"
                b, c = _param(f, "b", "{:.3f}"), _param(f, "c", "{:.3f}")
            else:
                law, b, c = Text(f"no law fitted: {f.lack_of_fit}", style="yellow"), "-", "-"
            fit.add_row(f"{f.task} ({f.metric})", f.encoder, law, b, c, f"{f.r2:.2f}", str(f.replicates),
                        results.crossover_text(f.crossover))
        out.append(fit)
    if status.design:
        des = Table(title="sequential designs: the cells each encoder's design chose (status.design)")
        for col in ("encoder", "target", "state", "cells", "rounds", "CI now", "why it stopped / what it does"):
            des.add_column(col)
        for d in status.design:
            ci = d.current
            now = "-" if ci is None or ci.low is None else \
                f"[{ci.low:,.3g}, {'unbounded' if ci.high is None else f'{ci.high:,.3g}'}]"
            des.add_row(d.encoder, f"{d.target} ({d.task})", d.state.value, f"{d.cells}/{d.max_cells}",
                        str(len(d.decisions)), now, f"{d.stop_reason + ': ' if d.stop_reason else ''}{d.message}")
        out.append(des)
    if status.best_per_task:
        best = Table(title="best encoder per task (lowest error at the largest size all encoders have)")
        for col in ("task", "metric", "size", "best"):
            best.add_column(col)
        for b in status.best_per_task:
            best.add_row(b.task, b.metric, f"{b.size:,}", b.encoder or f"tie: {', '.join(b.tied)} (CIs overlap)")
        out.append(best)
    return out


def _param(f: api.FitStatus, name: str, fmt: str) -> str:
    value, ci = getattr(f, name), f.ci95.get(name)
    text = fmt.format(value)
    if ci is not None:
        hi = "inf" if ci.high is None else fmt.format(ci.high)
        text += f" [{fmt.format(ci.low)}, {hi}]"
    return text


def make(console_file: Any = None) -> Display:
    out = console_file or sys.stdout
    return Display(Console(file=out, width=None if out.isatty() else 160))
