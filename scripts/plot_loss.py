#!/usr/bin/env python3
"""Draws the training loss curves of a `calq quantize --json` report as an SVG.

Usage: plot_loss.py REPORT.json OUT.svg [--log] [--title TEXT]

One polyline per training record (a qat-block layer, or qat-e2e's whole model), x = optimizer
step, y = the step's loss (log scale with --log); axes with ticks and labels, and a legend.
Standard library only.
"""
import argparse
import json
import math
import sys
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 30, 50
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf"]


def nice_ticks(lo, hi, count=5, integer=False):
    """About `count` round tick values covering [lo, hi] (whole numbers when `integer`)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = max((hi - lo) / count, 1.0) if integer else (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(v)
        v += step
    return ticks


def fmt(v):
    return f"{v:.4g}"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("out")
    ap.add_argument("--log", action="store_true", help="log-scale y axis")
    ap.add_argument("--title", default="")
    a = ap.parse_args(argv)
    with open(a.report, encoding="utf-8") as f:
        report = json.load(f)
    records = [r for r in report.get("training", []) if r.get("curve")]
    if not records:
        sys.exit(f"plot_loss.py: {a.report} has no training record with a loss curve")
    losses = [v for r in records for v in r["curve"]]
    if a.log and min(losses) <= 0:
        sys.exit("plot_loss.py: --log needs every loss > 0")
    ty = (lambda v: math.log10(v)) if a.log else (lambda v: v)
    ys = [ty(v) for v in losses]
    y_lo, y_hi = min(ys), max(ys)
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    x_hi = max(len(r["curve"]) for r in records)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(step):  # steps count from 1
        return LEFT + (0.5 if x_hi == 1 else (step - 1) / (x_hi - 1)) * pw

    def py(y):
        return TOP + (1 - (y - y_lo) / (y_hi - y_lo)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>']
    # x ticks: optimizer steps.
    for s in nice_ticks(1, x_hi, 6, integer=True):
        if s < 1 or s > x_hi:
            continue
        x = px(s)
        out.append(f'<line x1="{x:.1f}" y1="{TOP + ph}" x2="{x:.1f}" y2="{TOP + ph + 5}" stroke="black"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP + ph + 18}" text-anchor="middle">{fmt(s)}</text>')
    # y ticks: losses (decades' values on a log axis).
    for t in nice_ticks(y_lo, y_hi, 5):
        if t < y_lo - 1e-12 or t > y_hi + 1e-12:
            continue
        y = py(t)
        label = fmt(10 ** t) if a.log else fmt(t)
        out.append(f'<line x1="{LEFT - 5}" y1="{y:.1f}" x2="{LEFT}" y2="{y:.1f}" stroke="black"/>')
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(f'<text x="{LEFT + pw / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle">optimizer step</text>')
    out.append(f'<text x="16" y="{TOP + ph / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 16 {TOP + ph / 2:.1f})">loss{" (log scale)" if a.log else ""}</text>')
    title = a.title or f'training loss: {report.get("description", "")}'
    out.append(f'<text x="{LEFT}" y="{TOP - 10}">{escape(title)}</text>')
    for i, r in enumerate(records):
        color = COLORS[i % len(COLORS)]
        label = r["method"] + (f' layer {r["layer"]}' if r["layer"] >= 0 else "")
        pts = " ".join(f"{px(k + 1):.1f},{py(ty(v)):.1f}" for k, v in enumerate(r["curve"]))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}">'
                   f'<title>{escape(label)}</title></polyline>')
        if i < 24:  # the legend's room
            ly = TOP + 12 + 14 * i
            out.append(f'<line x1="{LEFT + pw + 12}" y1="{ly - 4}" x2="{LEFT + pw + 32}" y2="{ly - 4}" '
                       f'stroke="{color}" stroke-width="2"/>')
            out.append(f'<text x="{LEFT + pw + 38}" y="{ly}">{escape(label)}</text>')
    out.append("</svg>")
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
