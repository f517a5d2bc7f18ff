#!/usr/bin/env python3
"""Whole-model throughput of `calq eval` on the reference model, with its peak RSS.

Runs `calq eval --model REF --text heldout.txt --ctx 512 --threads 2` (all windows unless
--max-windows), and, in the same run, the sgemm-only bound measured by calq_kernels_bench:
the time the model's matrix products alone take at OpenBLAS speed. The ratio
calq tokens/s : sgemm-bound tokens/s says how close the runtime is to its matmul floor.

Usage: bench/eval_throughput.py [--build build] [--shared ../shared] [--threads 2] [--max-windows N]
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time

def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--shared", default=os.environ.get("CALQ_SHARED_DIR", os.path.join(root, "..", "shared")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=0)
    ap.add_argument("--text", default="heldout.txt")
    a = ap.parse_args()
    calq = os.path.join(a.build, "src", "cli", "calq")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [calq, "eval", "--model", os.path.join(a.shared, "models", "calq-ref-llama"),
               "--text", os.path.join(a.shared, "data", a.text), "--ctx", "512",
               "--threads", str(a.threads), "--json", out, "--quiet"]
        if a.max_windows:
            cmd += ["--max-windows", str(a.max_windows)]
        t0 = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        r = json.load(open(out))
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0

    # sgemm floor: the reference model's matrix products per 512-token window, timed at the
    # GFLOP/s that calq_kernels_bench measures for a [512x512]x[512x1536] product on 2 threads.
    bench = os.path.join(a.build, "bench", "calq_kernels_bench")
    res = subprocess.run([bench, "--benchmark_filter=BM_MatmulNt/1536/%d" % a.threads, "--benchmark_format=json",
                          "--benchmark_min_time=1"], check=True, capture_output=True, text=True)
    gflops = json.loads(res.stdout)["benchmarks"][0]["GFLOP/s"] / 1e9
    hidden, inter, q, kv, vocab, layers, ctx = 512, 1536, 512, 128, 16384, 6, 512
    flop_per_token = 2 * (layers * (hidden * (q + 2 * kv) + q * hidden + 3 * hidden * inter) + hidden * vocab)
    floor_tps = gflops * 1e9 / flop_per_token

    print(json.dumps({
        "command": " ".join(cmd),
        "windows": r["n_windows"], "ppl": r["ppl"],
        "tokens_per_second": round(r["tokens_per_second"], 1),
        "eval_seconds": round(r["seconds"], 2), "wall_seconds_incl_load_and_tokenize": round(wall, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "sgemm_gflops_2threads": round(gflops, 1),
        "sgemm_floor_tokens_per_second": round(floor_tps, 1),
        "ratio_to_sgemm_floor": round(r["tokens_per_second"] / floor_tps, 3),
    }, indent=1))

if __name__ == "__main__":
    sys.exit(main())
