#!/usr/bin/env python3
"""Draws the dashboard's panels (deploy/dashboards/panels.toml) from a running Prometheus into
one PNG: every panel's queries over the last N minutes, as Grafana would show them.

  python3 scripts/render-dashboard.py --prometheus http://127.0.0.1:9090 --minutes 10 --out dashboard.png

Needs matplotlib (installed with pip if missing). scripts/observability.sh --png runs it.
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import time
import tomllib
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent


def matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.dates as mdates
    return plt, mdates


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return body["data"]["result"]


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) or str(labels)


GOOD = {"online", "ok", "live", "closed"}
WARN = {"warning", "paper_low", "half_open", "degraded"}
BAD = {"offline", "critical", "emergency", "open", "paper_out", "cover_open", "error"}


def state_color(state):
    if state in GOOD:
        return "tab:green"
    if state in WARN:
        return "tab:orange"
    if state in BAD:
        return "tab:red"
    return "tab:gray"


def draw_states(ax, mdates, series_by_label, step):
    """A state timeline: one row per subject, coloured by the state whose series is 1."""
    subjects = {}
    for label, points in series_by_label:
        subject, _, state = label.rpartition(": ")
        rows = subjects.setdefault(subject or label, [])
        rows.append((state, points))
    width = step / 86400.0
    names = sorted(subjects)
    for y, subject in enumerate(names):
        for state, points in subjects[subject]:
            bars = [(mdates.date2num(t), width) for t, v in points if v == 1]
            if bars:
                ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=state_color(state))
                t, _ = points[-1]
                if bars and points[-1][1] == 1:
                    ax.text(mdates.date2num(t), y, f" {state}", va="center", fontsize=6)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=6)
    ax.xaxis_date()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--out", default="dashboard.png")
    a = ap.parse_args()
    plt, mdates = matplotlib()
    from datetime import datetime

    spec = tomllib.loads((ROOT / "deploy/dashboards/panels.toml").read_text())
    panels = spec["panel"]
    end = time.time()
    start = end - a.minutes * 60
    step = max(5, a.minutes * 60 // 200)
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    fig.suptitle(f"Wix printer: is the kitchen OK?  (last {a.minutes} min, {a.prometheus})", fontsize=14)
    for i, p in enumerate(panels):
        ax = axes[i // cols][i % cols]
        ax.set_title(f"{p['row']} / {p['title']}" + (f" [{p['unit']}]" if p.get("unit") else ""), fontsize=9)
        drawn = 0
        states = []
        for q in p["query"]:
            for series in query_range(a.prometheus, q["expr"], start, end, step):
                xs = [datetime.fromtimestamp(float(t)) for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                label = legend(q.get("legend", ""), series["metric"])
                drawn += 1
                if p["kind"] == "state":
                    states.append((label, list(zip(xs, ys))))
                else:
                    ax.plot(xs, ys, label=label, linewidth=1.2)
        if states:
            draw_states(ax, mdates, states, step)
        elif drawn:
            ax.legend(fontsize=6, loc="upper left", ncol=2 if drawn > 6 else 1)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(a.out, dpi=90)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
