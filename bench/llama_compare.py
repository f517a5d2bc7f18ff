#!/usr/bin/env python3
"""calq against llama.cpp on the same GGUF files: evaluation and calibration throughput (issue 20).

For every file, interleaved run by run on the same machine: `calq eval` (the fast kernels, the
default) and llama.cpp's `llama-perplexity`, both on the first N windows of 512 tokens of
heldout.txt with 2 threads; then, once per file, `calq eval --exact` for the fast path's PPL
deviation. Each tool's time is its own evaluation loop (calq: the JSON's tokens/s; llama.cpp: from
its "calculating perplexity" log line to its "Final estimate" line), not the load. Then `calq
calibrate` against `llama-imatrix` on 100 × 512 tokens of calib.txt (calq: its reported pass
time; llama.cpp: the "computing over" line to the process end). Ratios are llama.cpp's time over
calq's (above 1: calq faster), medians over the runs.

llama.cpp is not part of calq: build llama-perplexity, llama-imatrix and llama-quantize from its
source outside this repository and pass the folder with --llama-bin; the Q4_0 and Q6_K files are
made from the F16 file with that llama-quantize into --work.

Usage: bench/llama_compare.py --llama-bin DIR [--build build] [--shared ../shared] [--windows 40]
                              [--runs 3] [--threads 2] [--work /tmp/calq-llama-compare] [--no-calibrate]
"""
import argparse, json, os, re, statistics, subprocess, sys, time


def stamp_of(line, marker):
    # The time stamp written just before `marker`: llama.cpp overwrites its progress line in place, so
    # a message can share a line with the one before it.
    found = re.findall(r"(\d+)\.(\d+)\.(\d+)\.(\d+) \w ", line[:line.index(marker)])
    if not found:
        return None
    mi, s, ms, us = (int(g) for g in found[-1])
    return mi * 60 + s + ms / 1e3 + us / 1e6


def llama_loop_seconds(log, start_marker, end_marker):
    t0 = t1 = None
    for line in log.splitlines():
        if start_marker in line:
            t0 = stamp_of(line, start_marker)
        if end_marker in line:
            t1 = stamp_of(line, end_marker)
    if t0 is None or t1 is None:
        raise RuntimeError("could not find the timing lines in llama.cpp's log:\n" + log[-2000:])
    return t1 - t0


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr[-2000:]))
    return r.stdout + r.stderr


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-bin", required=True)
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--shared", default=os.environ.get("CALQ_SHARED_DIR", os.path.join(root, "..", "shared")))
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/calq-llama-compare")
    ap.add_argument("--no-calibrate", action="store_true")
    a = ap.parse_args()
    calq = os.path.join(a.build, "src", "cli", "calq")
    lp = os.path.join(a.llama_bin, "llama-perplexity")
    os.makedirs(a.work, exist_ok=True)
    f16 = os.path.join(a.shared, "models", "calq-ref-llama-f16.gguf")
    quants = os.path.join(a.shared, "peer-tests", "llama.cpp-quants")
    files = [("F16", f16), ("Q8_0", os.path.join(quants, "calq-ref-llama-Q8_0.gguf"))]
    for t in ("Q4_0", "Q6_K"):
        out = os.path.join(a.work, "calq-ref-llama-%s.gguf" % t)
        if not os.path.exists(out):
            run([os.path.join(a.llama_bin, "llama-quantize"), f16, out, t, str(a.threads)])
        files.append((t, out))
    files.append(("Q4_K_M", os.path.join(quants, "calq-ref-llama-Q4_K_M.gguf")))
    text = os.path.join(a.shared, "data", "heldout.txt")
    tokens = a.windows * 512
    version = run([lp, "--version"]).strip().splitlines()
    print("CPU: %s; %d threads; %d windows x 512 tokens; %d interleaved runs" % (cpu_model(), a.threads, a.windows,
                                                                                a.runs))
    print("llama.cpp: %s" % " ".join(l for l in version if "version" in l or "built" in l))
    rows = []
    for name, path in files:
        calq_s, llama_s, level, calls = [], [], "", {}
        for _ in range(a.runs):
            out = os.path.join(a.work, "eval.json")
            run([calq, "eval", "--model", path, "--text", text, "--ctx", "512", "--max-windows", str(a.windows),
                 "--threads", str(a.threads), "--quiet", "--json", out])
            j = json.load(open(out))
            calq_s.append(tokens / j["tokens_per_second"])
            level, calls, ppl_fast = j["kernels"]["level"], j["kernels"]["calls"], j["ppl"]
            log = run([lp, "-m", path, "-f", text, "-c", "512", "-b", "512", "--chunks", str(a.windows), "-t",
                       str(a.threads)])
            llama_s.append(llama_loop_seconds(log, "calculating perplexity", "Final estimate"))
        run([calq, "eval", "--model", path, "--text", text, "--ctx", "512", "--max-windows", str(a.windows),
             "--threads", str(a.threads), "--quiet", "--exact", "--json", out])
        ppl_exact = json.load(open(out))["ppl"]
        c, l = statistics.median(calq_s), statistics.median(llama_s)
        rows.append((name, tokens / c, tokens / l, l / c, ppl_fast, ppl_exact, level, ", ".join(sorted(calls))))
    print()
    print("| file | calq tok/s | llama.cpp tok/s | ratio | calq PPL fast | exact | deviation | calq kernels |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, ct, lt, ratio, pf, pe, level, calls in rows:
        print("| %s | %.0f | %.0f | **%.2f×** | %.4f | %.4f | %+.3f %% | %s |" % (name, ct, lt, ratio, pf, pe,
                                                                             100 * (pf - pe) / pe, calls))
    if a.no_calibrate:
        return 0
    calib = os.path.join(a.shared, "data", "calib.txt")
    hf = os.path.join(a.shared, "models", "calq-ref-llama")
    cs, ls = [], []
    for _ in range(a.runs):
        log = run([calq, "calibrate", "--model", hf, "--calib", calib, "--samples", "100", "--seq-len", "512",
                   "--threads", str(a.threads), "--out", os.path.join(a.work, "stats.gguf"), "--force", "--quiet"])
        cs.append(float(re.search(r"tokens, [0-9]+ sites, ([0-9.]+) s", log).group(1)))
        # llama-imatrix logs no time stamp after its last pass: its loop is the process' wall time
        # after the "computing over" line (the log clock starts with the process; saving the small
        # imatrix file is included).
        start = time.time()
        log = run([os.path.join(a.llama_bin, "llama-imatrix"), "-m", f16, "-f", calib, "-c", "512", "--chunks", "100",
                   "-t", str(a.threads), "-o", os.path.join(a.work, "imatrix.gguf")])
        wall = time.time() - start
        t0 = next(stamp_of(line, "computing over") for line in log.splitlines() if "computing over" in line)
        ls.append(wall - t0)
    c, l = statistics.median(cs), statistics.median(ls)
    print()
    print("| calibration, 100 x 512 tokens | calq calibrate | llama-imatrix | ratio |")
    print("|---|---:|---:|---:|")
    print("| seconds (median of %d) | %.2f | %.2f | **%.2f×** |" % (a.runs, c, l, l / c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
