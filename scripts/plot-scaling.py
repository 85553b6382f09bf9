#!/usr/bin/env python3
"""Plots a scaling sweep (the JSON of scripts/scaling-sweep.py) as PNG and SVG.

    scripts/plot-scaling.py SWEEP.json [MORE.json ...] [--out-dir DIR] [--name STEM] [--formats png,svg]

Several JSONs (sweeps of one machine, e.g. a strong and a weak one) are drawn as one sweep.

Figures (each STEM-<figure>.png and .svg; STEM defaults to the JSON's file name without .json):
  time         seconds vs ranks, log-log, ideal line (strong: T1/P; weak: T1), strong | weak
  efficiency   parallel efficiency vs ranks (strong: T1/(P*TP); weak: T1/TP), strong | weak; below it,
               the fraction of the FMA peak measured in the same run over P=1's (peakEfficiency:
               the host's slower clocks at high P divided out; fair for O(n^2) ring in weak sweeps)
  bytes        bytes sent per rank (max over ranks) vs ranks, hyper's bound dotted, strong | weak
  hyper-vs-ring  time of hyper and ring at the same n (top) and ring/hyper time ratio (bottom)
  phases       hyper's per-phase times (max over ranks) for every P, strong | weak
Colour = mode, solid/circles = non-causal, dashed/squares = causal; when a mode was run at two n
(hyper at the strong n and at ring's smaller n) the second is drawn lighter with triangles. Runs
that failed or timed out are listed in the figure's footer. Needs matplotlib and numpy
(pip install matplotlib numpy).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator  # noqa: E402

MODE_COLORS = {"hyper": "#1f77b4", "ring": "#d62728", "exact": "#2ca02c"}
OTHER_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
KIND_TITLES = {"strong": "Strong scaling (n fixed)", "weak": "Weak scaling (n grows with P)"}
PHASES = [("hash", "hash", "#8dd3c7"), ("exchange", "sort/exchange", "#fb8072"),
          ("sampleGather", "sample gather", "#bebada"), ("compute", "compute", "#80b1d3"),
          ("return", "return", "#fdb462")]


def fmt_n(n: int) -> str:
    if n >= 1024 and n & (n - 1) == 0:
        return f"$2^{{{n.bit_length() - 1}}}$"
    return f"{n:,}"


class Sweep:
    def __init__(self, doc: dict):
        self.doc = doc
        self.runs = doc.get("runs", [])
        self.ok = [r for r in self.runs if r.get("status") == "ok" and r.get("seconds")]
        self.bad = [r for r in self.runs if r.get("status") not in ("ok", "pending")]
        self.kinds = [k for k in ("strong", "weak") if any(r["kind"] == k for r in self.runs)]
        self.modes = sorted({r["mode"] for r in self.runs}, key=lambda m: (m != "hyper", m != "ring", m))
        self.binds = sorted({r.get("bind", "auto") for r in self.runs})
        self.threads = sorted({r.get("threadsPerRank", 1) for r in self.runs})
        # per (kind, mode): the base n values, main one first (the largest)
        self.bases = {}
        for r in self.runs:
            self.bases.setdefault((r["kind"], r["mode"]), set()).add(r["baseN"])
        self.bases = {k: sorted(v, reverse=True) for k, v in self.bases.items()}
        self.all_ranks = sorted({r["ranks"] for r in self.runs})
        self.fill_throughput_efficiency()

    def fill_throughput_efficiency(self):
        """(GFLOP/s_P/P)/(GFLOP/s_0/P0), and the same per measured FMA peak, for sweeps written
        before scaling-sweep.py recorded them."""
        def key(r):
            return (r["kind"], r["mode"], r["causal"], r["baseN"], r.get("bind"), r.get("threadsPerRank"))
        by_key = {(key(r), r["ranks"]): r for r in self.ok}
        for r in self.ok:
            base = by_key.get((key(r), r.get("baselineRanks")))
            if not base:
                continue
            if "throughputEfficiency" not in r and base.get("gflops") and r.get("gflops"):
                r["throughputEfficiency"] = (r["gflops"] / r["ranks"]) / (base["gflops"] / base["ranks"])
            if r.get("peakEfficiency") is None and base.get("fractionOfPeak") and r.get("fractionOfPeak"):
                r["peakEfficiency"] = r["fractionOfPeak"] / base["fractionOfPeak"]

    def color(self, mode: str) -> str:
        if mode in MODE_COLORS:
            return MODE_COLORS[mode]
        others = [m for m in self.modes if m not in MODE_COLORS]
        return OTHER_COLORS[others.index(mode) % len(OTHER_COLORS)]

    def series(self, kind: str, modes=None):
        """[(key, label, style, rows sorted by P)] for the ok rows of one kind."""
        out = []
        for mode in self.modes:
            if modes is not None and mode not in modes:
                continue
            bases = self.bases.get((kind, mode), [])
            for bi, base in enumerate(bases):
                for causal in (False, True):
                    for bind in self.binds:
                        for threads in self.threads:
                            rows = sorted((r for r in self.ok if r["kind"] == kind and r["mode"] == mode
                                           and r["causal"] == causal and r["baseN"] == base
                                           and r.get("bind", "auto") == bind
                                           and r.get("threadsPerRank", 1) == threads),
                                          key=lambda r: r["ranks"])
                            if not rows:
                                continue
                            out.append(((kind, mode, base, causal, bind, threads),
                                        self.label(kind, mode, base, causal, bind, threads),
                                        self.style(mode, bi, causal, bind), rows))
        return out

    def label(self, kind, mode, base, causal, bind, threads) -> str:
        n = f"n={fmt_n(base)}" if kind == "strong" else f"n={fmt_n(base)}·P"
        parts = [mode, "causal" if causal else "non-causal", n]
        if len(self.binds) > 1:
            parts.append(f"bind {bind}")
        if len(self.threads) > 1:
            parts.append(f"{threads} thr/rank")
        return ", ".join(parts)

    def style(self, mode, base_index, causal, bind) -> dict:
        color = self.color(mode)
        marker = ("o" if not causal else "s") if base_index == 0 else ("^" if not causal else "v")
        style = dict(color=color, marker=marker, linestyle="--" if causal else "-", linewidth=1.8,
                     markersize=6, alpha=1.0 if base_index == 0 else 0.55)
        if len(self.binds) > 1 and bind == "none":
            style["linestyle"] = ":" if not causal else "-."
            style["markerfacecolor"] = "white"
        return style

    def subtitle(self) -> str:
        m = self.doc.get("machine", {})
        s = self.doc.get("settings", {})
        g = self.doc.get("git", {})
        hosts = self.doc.get("hosts")
        cpu = f"{m.get('cpuModel', '?')}, {m.get('logicalCPUs', '?')} logical CPUs"
        if m.get("physicalCores"):
            cpu += f" ({m['physicalCores']} cores)"
        if hosts:
            cpu = f"{len(hosts)} host(s) from {s.get('hostfile')}; launch node: " + cpu
        bits = [cpu,
                f"b=1, h={s.get('heads')}, d={s.get('d')}, {', '.join(str(t) for t in self.threads)} thread(s)/rank, "
                f"best of {'/'.join(str(x) for x in self.doc.get('repeatsList', [s.get('repeats')]))}",
                f"{(self.doc.get('date') or '')[:10]}, git {g.get('describe') or (g.get('commit') or '?')[:10]}"]
        if not self.doc.get("finished"):
            bits.append("PARTIAL sweep")
        return " · ".join(bits)

    def failures_note(self, kinds=None, modes=None) -> str | None:
        bad = [r for r in self.bad if (kinds is None or r["kind"] in kinds) and (modes is None or r["mode"] in modes)]
        if not bad:
            return None
        items = [f"{r['kind']} {r['mode']} {'causal' if r['causal'] else 'non-causal'} P={r['ranks']} "
                 f"n={r['n']}: {r['status']}" for r in bad]
        if len(items) > 6:
            items = items[:6] + [f"… {len(bad) - 6} more"]
        return "not in the plot: " + "; ".join(items)


def log_y(ax):
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))


def mark_oversubscribed(ax, sweep: "Sweep", ranks):
    """Grey band where ranks*threads exceed the cores (ranks share cores: times mean little there)."""
    cores = (sweep.doc.get("settings") or {}).get("cores")
    threads = max(sweep.threads or [1])
    if not cores:
        return
    over = [p for p in ranks if p * threads > cores]
    fit = [p for p in ranks if p * threads <= cores]
    if not over:
        return
    left = math.sqrt(max(fit) * min(over)) if fit else min(ranks) / 1.3
    ax.axvspan(left, max(ranks) * 1.3, color="#999999", alpha=0.12, zorder=0, linewidth=0)
    ax.text(left, 0.99, f" P·threads > {cores} cores:\n oversubscribed", transform=ax.get_xaxis_transform(),
            fontsize=7, color="#555555", va="top", ha="left")


def setup_ranks_axis(ax, ranks, sweep: "Sweep | None" = None):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ranks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{int(v)}" if v >= 1 else f"{v:g}"))
    ax.set_xlim(min(ranks) / 1.3, max(ranks) * 1.3)
    ax.set_xlabel("MPI ranks P")
    ax.grid(True, which="major", alpha=0.3)
    if sweep is not None:
        mark_oversubscribed(ax, sweep, ranks)


def finish(fig, sweep: Sweep, title: str, note: str | None, path_stem: str, formats):
    fig.suptitle(title, fontsize=14, fontweight="bold", y=0.995)
    fig.text(0.5, 0.945, sweep.subtitle(), ha="center", va="top", fontsize=8.5, color="#444444", wrap=True)
    bottom = 0.03
    if note:
        fig.text(0.01, 0.005, note, ha="left", va="bottom", fontsize=7.5, color="#b00000", wrap=True)
        bottom = 0.06
    fig.tight_layout(rect=(0, bottom, 1, 0.925))
    written = []
    for ext in formats:
        path = f"{path_stem}.{ext}"
        fig.savefig(path, dpi=130 if ext == "png" else None)
        written.append(path)
    plt.close(fig)
    return written


def legend_below(ax, ncol=2):
    """The legend under the axes, so that it never hides a line."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7.5, ncol=ncol, loc="upper center", bbox_to_anchor=(0.5, -0.13),
                  frameon=False)


def empty(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777777")
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------------------------


def plot_time(sweep: Sweep, stem, formats):
    fig, axes = plt.subplots(1, len(sweep.kinds), figsize=(max(7.5, 6.6 * len(sweep.kinds)), 6.2), squeeze=False)
    for ax, kind in zip(axes[0], sweep.kinds):
        ideal_drawn = False
        for _key, label, style, rows in sweep.series(kind):
            p = np.array([r["ranks"] for r in rows], float)
            t = np.array([r["seconds"] for r in rows], float)
            ax.plot(p, t, label=label, **style)
            base = rows[0]
            p0, t0 = base["ranks"], base["seconds"]
            pp = np.array(sweep.all_ranks, float)
            pp = pp[pp >= p0]
            ideal = t0 * p0 / pp if kind == "strong" else np.full_like(pp, t0)
            ax.plot(pp, ideal, color=style["color"], linestyle=":", linewidth=1, alpha=0.5 * style["alpha"])
            ideal_drawn = True
        if not sweep.series(kind):
            empty(ax, "no successful runs")
            continue
        if ideal_drawn:
            ax.plot([], [], color="gray", linestyle=":", linewidth=1, label="ideal (per series)")
        log_y(ax)
        setup_ranks_axis(ax, sweep.all_ranks, sweep)
        ax.set_ylabel("time per call (s, slowest rank, best of repeats)")
        ax.set_title(KIND_TITLES[kind] + (": ideal T1/P dotted" if kind == "strong" else ": ideal T1 dotted"),
                     fontsize=10.5)
        legend_below(ax)
        _ = ideal_drawn
    return finish(fig, sweep, "Attention time vs MPI ranks", sweep.failures_note(), stem + "-time", formats)


def plot_efficiency(sweep: Sweep, stem, formats):
    """Top: time efficiency. Bottom: the fraction of the FMA peak measured in the same run over
    P=1's (peakEfficiency), which divides out a shared host's slower clocks at high P and, being
    per useful FLOP, is also the fair efficiency of an O(n^2) method such as ring in a weak sweep.
    Sweeps without peak figures fall back to useful GFLOP/s per rank (throughputEfficiency)."""
    has_peak = any(r.get("peakEfficiency") is not None for r in sweep.ok)
    second = "peakEfficiency" if has_peak else "throughputEfficiency"
    rows_n = 2 if any(r.get(second) is not None for r in sweep.ok) else 1
    fig, axes = plt.subplots(rows_n, len(sweep.kinds), squeeze=False,
                             figsize=(max(7.5, 6.6 * len(sweep.kinds)), 6.2 if rows_n == 1 else 11))
    for col, kind in enumerate(sweep.kinds):
        panels = [("efficiency", axes[0][col])] + ([(second, axes[1][col])] if rows_n == 2 else [])
        for field, ax in panels:
            series = sweep.series(kind)
            if not series:
                empty(ax, "no successful runs")
                continue
            top = 1.1
            for _key, label, style, rows in series:
                rows = [r for r in rows if r.get(field) is not None]
                p = [r["ranks"] for r in rows]
                e = [r[field] for r in rows]
                if rows and rows[0].get("baselineRanks", 1) != 1:
                    label += f" (vs P={rows[0]['baselineRanks']})"
                ax.plot(p, e, label=label, **style)
                top = max(top, max(e, default=0) * 1.08)
            ax.axhline(1.0, color="black", linewidth=1, linestyle=":", alpha=0.6, label="ideal")
            setup_ranks_axis(ax, sweep.all_ranks, sweep)
            ax.set_ylim(0, top)
            if field == "efficiency":
                ax.set_ylabel("parallel efficiency " + ("T1 / (P·TP)" if kind == "strong" else "T1 / TP"))
                ax.set_title(KIND_TITLES[kind] + ": time efficiency", fontsize=10.5)
            elif field == "peakEfficiency":
                ax.set_ylabel("fraction of FMA peak at P / at P=1")
                ax.set_title(KIND_TITLES[kind] + ": against the FMA peak measured in the same run",
                             fontsize=10.5)
            else:
                ax.set_ylabel("throughput efficiency (GFLOP/s_P / P) / GFLOP/s_1")
                ax.set_title(KIND_TITLES[kind] + ": useful GFLOP/s per rank vs P=1 "
                             "(fair for O(n²) ring)", fontsize=10.5)
            legend_below(ax)
    return finish(fig, sweep, "Parallel efficiency vs MPI ranks", sweep.failures_note(), stem + "-efficiency", formats)


def plot_bytes(sweep: Sweep, stem, formats):
    fig, axes = plt.subplots(1, len(sweep.kinds), figsize=(max(7.5, 6.6 * len(sweep.kinds)), 6.2), squeeze=False)
    for ax, kind in zip(axes[0], sweep.kinds):
        drawn = any_bound = False
        for _key, label, style, rows in sweep.series(kind):
            rows = [r for r in rows if r.get("bytesSentMax") is not None and r["ranks"] > 1]
            if not rows:
                continue
            p = [r["ranks"] for r in rows]
            ax.plot(p, [r["bytesSentMax"] / 2**20 for r in rows], label=label, **style)
            bound = [(r["ranks"], r["byteBoundMax"] / 2**20) for r in rows if r.get("byteBoundMax")]
            if bound:
                bs = dict(style, linestyle=":", marker="_", markersize=10, linewidth=1.2)
                ax.plot(*zip(*bound), **bs)
                any_bound = True
            drawn = True
        if not drawn:
            empty(ax, "no multi-rank runs with byte counts")
            continue
        if any_bound:
            ax.plot([], [], color="gray", linestyle=":", marker="_", markersize=10,
                    label="hyper's bound (dotted, colour and n of its series)")
        log_y(ax)
        setup_ranks_axis(ax, [p for p in sweep.all_ranks if p > 1] or sweep.all_ranks)
        ax.set_ylabel("bytes sent per rank, max over ranks (MiB)")
        ax.set_title(KIND_TITLES[kind] + ": bytes sent in one call", fontsize=10.5)
        legend_below(ax)
    return finish(fig, sweep, "Communication: bytes sent per rank vs MPI ranks", sweep.failures_note(),
                  stem + "-bytes", formats)


def plot_hyper_vs_other(sweep: Sweep, stem, formats):
    others = [m for m in sweep.modes if m != "hyper"]
    other = "ring" if "ring" in others else (others[0] if others else None)
    if "hyper" not in sweep.modes or other is None:
        return []
    fig, axes = plt.subplots(2, len(sweep.kinds), figsize=(max(7.5, 6.6 * len(sweep.kinds)), 10), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for col, kind in enumerate(sweep.kinds):
        ax, rax = axes[0][col], axes[1][col]
        common = [b for b in sweep.bases.get((kind, other), []) if b in sweep.bases.get((kind, "hyper"), [])]
        if not common:
            empty(ax, f"no hyper and {other} runs at the same n")
            empty(rax, "")
            continue
        base = common[0]
        for causal in (False, True):
            times = {}
            for mode in ("hyper", other):
                rows = sorted((r for r in sweep.ok if r["kind"] == kind and r["mode"] == mode and r["causal"] == causal
                               and r["baseN"] == base), key=lambda r: (r["ranks"], r.get("bind", "")))
                if not rows:
                    continue
                style = sweep.style(mode, 0, causal, "auto")
                ax.plot([r["ranks"] for r in rows], [r["seconds"] for r in rows],
                        label=f"{mode}, {'causal' if causal else 'non-causal'}", **style)
                times[mode] = {r["ranks"]: r["seconds"] for r in rows}
            if len(times) == 2:
                ps = sorted(set(times["hyper"]) & set(times[other]))
                ratio = [times[other][p] / times["hyper"][p] for p in ps]
                rax.plot(ps, ratio, color="black", marker="s" if causal else "o", linestyle="--" if causal else "-",
                         label=f"{'causal' if causal else 'non-causal'}")
                for p, v in zip(ps, ratio):
                    rax.annotate(f"{v:.3g}×", (p, v), textcoords="offset points", xytext=(0, 6), ha="center",
                                 fontsize=7.5)
        n_text = f"n={fmt_n(base)}" if kind == "strong" else f"n={fmt_n(base)}·P"
        log_y(ax)
        setup_ranks_axis(ax, sweep.all_ranks, sweep)
        ax.set_ylabel("time per call (s, slowest rank)")
        ax.set_title(f"{KIND_TITLES[kind]}, {n_text}: {other} vs hyper", fontsize=10.5)
        legend_below(ax)
        log_y(rax)
        setup_ranks_axis(rax, sweep.all_ranks, sweep)
        rax.axhline(1.0, color="gray", linewidth=1, linestyle=":")
        rax.set_ylabel(f"time ratio {other} / hyper (×, >1: hyper faster)")
        lo, hi = rax.get_ylim()
        rax.set_ylim(min(lo, 0.8), hi * 1.6)
        rax.legend(fontsize=7.5, loc="upper left", framealpha=0.85)
    return finish(fig, sweep, f"HyperAttention vs {other} attention at equal n",
                  sweep.failures_note(modes=("hyper", other)), stem + f"-hyper-vs-{other}", formats)


def plot_phases(sweep: Sweep, stem, formats, mode="hyper"):
    if mode not in sweep.modes:
        return []
    fig, axes = plt.subplots(1, len(sweep.kinds), figsize=(max(7.5, 6.6 * len(sweep.kinds)), 6.2), squeeze=False)
    for ax, kind in zip(axes[0], sweep.kinds):
        base = (sweep.bases.get((kind, mode)) or [None])[0]
        groups = []
        for causal in (False, True):
            rows = sorted((r for r in sweep.ok if r["kind"] == kind and r["mode"] == mode and r["causal"] == causal
                           and r["baseN"] == base and r.get("phases")), key=lambda r: r["ranks"])
            if len(sweep.binds) > 1:
                rows = [r for r in rows if r.get("bind") == sweep.binds[0]]
            groups.append((causal, rows))
        if not any(rows for _c, rows in groups):
            empty(ax, "no runs with phase times")
            continue
        ranks = sorted({r["ranks"] for _c, rows in groups for r in rows})
        x = np.arange(len(ranks), dtype=float)
        width = 0.38
        for gi, (causal, rows) in enumerate(groups):
            by_p = {r["ranks"]: r for r in rows}
            bottom = np.zeros(len(ranks))
            offs = x + (gi - 0.5) * width * 1.05
            for name, label, color in PHASES:
                vals = np.array([((by_p[p]["phases"].get(name) or {}).get("max") or 0) if p in by_p else 0
                                 for p in ranks])
                ax.bar(offs, vals, width, bottom=bottom, color=color, edgecolor="white", linewidth=0.5,
                       hatch="//" if causal else None, label=label if gi == 0 else None)
                bottom += vals
            tot = [by_p[p]["seconds"] if p in by_p else None for p in ranks]
            ax.scatter([o for o, t in zip(offs, tot) if t], [t for t in tot if t], marker="_", s=200, color="black",
                       zorder=3, label="measured time per call" if gi == 0 else None)
        ax.set_xticks(x)
        ax.set_xticklabels([f"P={p}" for p in ranks])
        ax.set_xlabel("MPI ranks (left bar: non-causal; right bar, hatched: causal)")
        ax.set_ylabel("seconds (each phase: max over ranks; stack ≥ time)")
        n_text = f"n={fmt_n(base)}" if kind == "strong" else f"n={fmt_n(base)}·P"
        ax.set_title(f"{KIND_TITLES[kind]}, {mode}, {n_text}", fontsize=10.5)
        ax.grid(True, axis="y", alpha=0.3)
        legend_below(ax, ncol=3)
    return finish(fig, sweep, f"Where the time goes: {mode} phases per MPI rank count", None,
                  stem + f"-phases-{mode}", formats)


def merge_sweeps(docs: list[dict], paths: list[str]) -> dict:
    """One sweep document from several of the same machine: the first's metadata, every run.
    Raises ValueError when the CPU models or head settings differ, or a point appears twice."""
    if len(docs) == 1:
        return docs[0]
    first = docs[0]
    merged = dict(first)
    merged["runs"] = []
    seen = {}
    for doc, path in zip(docs, paths):
        for field, get in (("CPU model", lambda d: d.get("machine", {}).get("cpuModel")),
                           ("heads", lambda d: d.get("settings", {}).get("heads")),
                           ("d", lambda d: d.get("settings", {}).get("d"))):
            if get(doc) != get(first):
                raise ValueError(f"{path}: {field} {get(doc)!r} differs from {paths[0]}'s {get(first)!r}")
        for r in doc["runs"]:
            point = (r["kind"], r["mode"], r["causal"], r["baseN"], r["ranks"], r.get("bind"), r.get("threadsPerRank"))
            if point in seen:
                raise ValueError(f"{path}: {point[0]} {point[1]} causal={point[2]} n={point[3]} P={point[4]} "
                                 f"is also in {seen[point]}")
            seen[point] = path
            merged["runs"].append(r)
    merged["finished"] = all(d.get("finished") for d in docs)
    merged["repeatsList"] = sorted({d.get("settings", {}).get("repeats") for d in docs} - {None})
    commits = sorted({(d.get("git") or {}).get("describe") or "?" for d in docs})
    merged["git"] = dict(first.get("git") or {}, describe="+".join(commits))
    return merged


def main(argv):
    ap = argparse.ArgumentParser(prog="scripts/plot-scaling.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="the sweep's JSON (scripts/scaling-sweep.py --out PREFIX writes "
                    "PREFIX.json); several are drawn as one sweep (same machine)")
    ap.add_argument("--out-dir", help="directory for the figures (default: next to the JSON)")
    ap.add_argument("--name", help="file name stem (default: the JSON's name without .json)")
    ap.add_argument("--formats", default="png,svg", help="comma-separated: png, svg, pdf (default png,svg)")
    args = ap.parse_args(argv)
    docs = []
    for path in args.json:
        try:
            with open(path, encoding="utf-8") as f:
                docs.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"plot-scaling: error: {path}: {e}", file=sys.stderr)
            return 2
        if not docs[-1].get("runs"):
            print(f"plot-scaling: error: {path} has no runs", file=sys.stderr)
            return 2
    try:
        doc = merge_sweeps(docs, args.json)
    except ValueError as e:
        print(f"plot-scaling: error: {e}", file=sys.stderr)
        return 2
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.json[0]))
    os.makedirs(out_dir, exist_ok=True)
    name = args.name or os.path.basename(args.json[0]).removesuffix(".json")
    stem = os.path.join(out_dir, name)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    sweep = Sweep(doc)
    if not sweep.ok:
        print("plot-scaling: warning: no successful runs; figures will be empty", file=sys.stderr)
    plt.rcParams.update({"font.size": 9.5, "axes.titlesize": 10.5, "svg.fonttype": "none"})
    written = []
    written += plot_time(sweep, stem, formats)
    written += plot_efficiency(sweep, stem, formats)
    written += plot_bytes(sweep, stem, formats)
    written += plot_hyper_vs_other(sweep, stem, formats)
    for mode in sweep.modes:
        written += plot_phases(sweep, stem, formats, mode)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
