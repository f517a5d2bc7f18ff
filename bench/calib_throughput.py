#!/usr/bin/env python3
"""Throughput and peak RSS of the layer-sequential calibration pipeline (`calq calibrate`) on the
reference model, against a baseline measured in the same run.

Runs, one after the other, each as its own process (peak RSS from wait4 of that process):
  baseline: calq inspect --activations  (the plain forward pass over the same number of windows,
            with its light per-channel hooks; the same model and tokens/s scale)
  calq calibrate --stats absmax,mean_abs,mean_sq,histogram   (the defaults)
  calq calibrate --stats absmax,mean_abs,mean_sq,histogram,hessian   (what GPTQ needs)
on calib.txt, --samples 128 --seq-len 512, --threads 2, and prints tokens/s (from the tools' own
reports, which time the pass and not the model load), wall time and peak RSS of each, with the
ratio of each calibrate run's tokens/s to the baseline's.

Usage: bench/calib_throughput.py [--build build] [--shared ../shared] [--threads 2] [--samples 128]
"""
import argparse, json, os, re, sys, tempfile, time


def run_rss(cmd):
    """Runs cmd; returns (output, wall seconds, peak RSS MiB of that process)."""
    t0 = time.time()
    with tempfile.TemporaryFile(mode="w+") as out:
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            os.execv(cmd[0], cmd)
        _, status, usage = os.wait4(pid, 0)
        wall = time.time() - t0
        out.seek(0)
        text = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{text}")
    return text, wall, usage.ru_maxrss / 1024.0


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--shared", default=os.environ.get("CALQ_SHARED_DIR", os.path.join(root, "..", "shared")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=128)
    a = ap.parse_args()
    calq = os.path.join(a.build, "src", "cli", "calq")
    model = os.path.join(a.shared, "models", "calq-ref-llama")
    calib = os.path.join(a.shared, "data", "calib.txt")
    common = ["--threads", str(a.threads)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [calq, "inspect", model, "--activations", "--text", calib, "--samples", str(a.samples),
               "--ctx", "512"] + common
        text, wall, rss = run_rss(cmd)
        tps = float(re.search(r"([0-9.]+) tokens/s", text).group(1))
        rows.append({"run": "baseline: inspect --activations", "command": " ".join(cmd), "tokens_per_second": tps,
                     "wall_s": round(wall, 2), "peak_rss_mib": round(rss, 1)})
        for stats in ["absmax,mean_abs,mean_sq,histogram", "absmax,mean_abs,mean_sq,histogram,hessian"]:
            out = os.path.join(tmp, "stats.gguf")
            cmd = [calq, "calibrate", "--model", model, "--calib", calib, "--samples", str(a.samples),
                   "--seq-len", "512", "--stats", stats, "--out", out, "--force"] + common
            text, wall, rss = run_rss(cmd)
            tps = float(re.search(r"\(([0-9.]+) tokens/s\)", text).group(1))
            rows.append({"run": "calibrate --stats " + stats, "command": " ".join(cmd), "tokens_per_second": tps,
                         "wall_s": round(wall, 2), "peak_rss_mib": round(rss, 1),
                         "stats_file_mib": round(os.path.getsize(out) / 2**20, 1)})
    base = rows[0]["tokens_per_second"]
    for r in rows:
        r["ratio_to_baseline"] = round(r["tokens_per_second"] / base, 3)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
