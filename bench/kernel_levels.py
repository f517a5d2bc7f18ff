#!/usr/bin/env python3
"""calq eval throughput per kernel path on the same files, interleaved (issue 20).

For every file and every variant, run by run in turn: `calq eval --model FILE --text heldout.txt
--ctx 512 --max-windows N --threads T`, where a variant is either a kernel level forced with the
environment variable CALQ_KERNEL_LEVEL (e.g. avx2, avx-vnni, avx512-vnni) or `exact` (--exact: the
dequantize + OpenBLAS path). Each run's time is calq's own evaluation loop (the JSON's tokens/s),
not the load. Prints, per file, the median tokens/s of each variant, its ratio to the first
variant, the PPL and the kernels the report names (a level the CPU lacks is reported as the level
that ran instead). The VM this was written on drifts by ±20 % within minutes: only ratios of
interleaved runs mean anything.

Usage: bench/kernel_levels.py FILE... [--variants avx2,avx-vnni,avx512-vnni,exact] [--build build]
                              [--shared ../shared] [--windows 20] [--runs 3] [--threads 2]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_compare import cpu_model  # noqa: E402  (one reader of /proc/cpuinfo for the bench scripts)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--variants", default="avx2,avx-vnni,avx512-vnni,exact")
    p.add_argument("--build", default="build")
    p.add_argument("--shared", default="../shared")
    p.add_argument("--windows", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    calq = os.path.join(a.build, "src", "cli", "calq")
    text = os.path.join(a.shared, "data", "heldout.txt")
    variants = a.variants.split(",")
    speeds = {(f, v): [] for f in a.files for v in variants}
    info = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "eval.json")
        for _ in range(a.runs):
            for f in a.files:
                for v in variants:
                    env = dict(os.environ)
                    env.pop("CALQ_KERNEL_LEVEL", None)
                    cmd = [calq, "eval", "--model", f, "--text", text, "--ctx", "512", "--max-windows",
                           str(a.windows), "--threads", str(a.threads), "--quiet", "--json", out]
                    if v == "exact":
                        cmd.append("--exact")
                    else:
                        env["CALQ_KERNEL_LEVEL"] = v
                    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if r.returncode != 0:
                        sys.exit("command failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr[-2000:]))
                    j = json.load(open(out))
                    speeds[(f, v)].append(j["tokens_per_second"])
                    info[(f, v)] = (j["ppl"], j["kernels"]["level"], ", ".join(sorted(j["kernels"]["calls"])))
    print("CPU: %s; %d windows of 512 tokens, %d threads, median of %d interleaved runs"
          % (cpu_model(), a.windows, a.threads, a.runs))
    print()
    print("| file | variant | level ran | tok/s | vs %s | PPL | kernels |" % variants[0])
    print("|---|---|---|---:|---:|---:|---|")
    for f in a.files:
        base = statistics.median(speeds[(f, variants[0])])
        for v in variants:
            med = statistics.median(speeds[(f, v)])
            ppl, level, calls = info[(f, v)]
            print("| %s | %s | %s | %s | %.2f× | %.4f | %s |"
                  % (os.path.basename(f), v, "-" if v == "exact" else level, f"{med:,.0f}", med / base, ppl, calls))


if __name__ == "__main__":
    main()
