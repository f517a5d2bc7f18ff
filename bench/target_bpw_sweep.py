#!/usr/bin/env python3
"""Builds the --target-bpw sweep of issue 7 in docs/RESULTS.md: the reference model quantized with
`calq quantize --target-bpw B` (exact knapsack over a measured sensitivity map) at several budgets,
then every result and llama.cpp's files evaluated against the full-precision model on identical
tokens in ONE `calq eval --ref` pass; predicted (sum of per-tensor KLDs on the map's slice) against
measured KLD, and each budget against llama.cpp's closest file at the same or fewer bits per weight.

Usage: bench/target_bpw_sweep.py --map MAP.json --stats STATS.gguf [--calq build/src/cli/calq]
       [--shared ../shared] [--work /tmp/calq-sweep] [--budgets 3.0,3.5,...] [--max-windows 100]
       [--method gptq];  bench/target_bpw_sweep.py --table DIR  reprints the table.
MAP.json comes from `calq sensitivity --format q2_k,q3_k,q4_k,q5_k,q6_k,q8_0 --method gptq --stats STATS.gguf
--eval-text calib.txt --json MAP.json` (measured on calibration text, not on the evaluation text).
"""
import argparse, json, os, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_table import run, row  # noqa: E402

PEERS = ["Q2_K-imatrix", "Q3_K_M-imatrix", "Q4_K_M-imatrix", "Q8_0"]
BUDGETS = "3.0,3.5,4.0,4.1,4.5,4.708,5.0,5.293,6.0,8.506"


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--calq", default=os.path.join(root, "build/src/cli/calq"))
    ap.add_argument("--shared", default=os.path.join(root, "../shared"))
    ap.add_argument("--work", default="/tmp/calq-sweep")
    ap.add_argument("--map", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--method", default="gptq")
    ap.add_argument("--budgets", default=BUDGETS)
    ap.add_argument("--candidates", default="q2_k,q3_k,q4_k,q5_k,q6_k,q8_0")
    ap.add_argument("--threads", default="0")
    ap.add_argument("--max-windows", default="100")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    log = open(os.path.join(a.work, "log.txt"), "a")
    ref = os.path.join(a.shared, "models/calq-ref-llama")
    T = ["--threads", a.threads]
    rows = []
    for b in a.budgets.split(","):
        out = os.path.join(a.work, f"tb-{b}.gguf")
        stdout, dt = run([a.calq, "quantize", "--model", ref, "--out", out, "--force", "--target-bpw", b,
                          "--candidates", a.candidates, "--sensitivity", a.map, "--method", a.method,
                          "--stats", a.stats] + T, log)
        m = re.search(r"target +\S+ bits per weight: ([0-9.]+) written, predicted KLD ([0-9.e+-]+)", stdout)
        mix = re.search(r"allocation +\d+ tensors \((.*)\), \d+ bytes", stdout).group(1)
        rows.append({"budget": float(b), "path": out, "bpw": float(m.group(1)), "predicted": float(m.group(2)),
                     "types": mix, "seconds": dt})
    peers = [os.path.join(a.shared, f"peer-tests/llama.cpp-quants/calq-ref-llama-{p}.gguf") for p in PEERS]
    cmd = [a.calq, "eval", "--exact", "--ref", ref, "--text", os.path.join(a.shared, "data/heldout.txt"), "--ctx", "512",
           "--tokenizer", os.path.join(ref, "tokenizer.json"), "--json", os.path.join(a.work, "eval.json"), "-q"] + T
    if a.max_windows != "0":
        cmd += ["--max-windows", a.max_windows]
    for r in rows + [{"path": p} for p in peers]:
        cmd += ["--model", r["path"]]
    run(cmd, log)
    json.dump({"rows": rows, "peers": peers}, open(os.path.join(a.work, "rows.json"), "w"), indent=1)
    print_table(a.work)


def print_table(work):
    meta = json.load(open(os.path.join(work, "rows.json")))
    ev = json.load(open(os.path.join(work, "eval.json")))
    by_path = {os.path.abspath(c["model"]): c for c in ev["candidates"]}
    peers = []
    for p in meta["peers"]:
        c = by_path[os.path.abspath(p)]
        peers.append((c["bits_per_weight"], os.path.basename(p).replace("calq-ref-llama-", "").replace(".gguf", ""), c))
    print(f"\nreference PPL {ev['candidates'][0]['ppl_ref']:.4f}, {ev['n_windows']} windows\n")
    print("| target bpw | bits/weight | tensor types | predicted KLD | measured KLD (95% CI) | measured / predicted "
          "| ΔPPL | top-1 | llama.cpp at ≤ these bits: KLD, calq's margin | llama.cpp at ≥ these bits: KLD, calq's margin |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---|---|")
    tol = 5e-4  # bits per weight printed to 3 decimals: equal budgets count as both

    def versus(c, peer):
        if peer is None:
            return "—"
        margin = 1 - c["kld_mean"] / peer[2]["kld_mean"]
        verdict = f"{100 * margin:.1f} % lower" if margin > 0 else f"{-100 * margin:.1f} % HIGHER"
        return f"{peer[1]} ({peer[0]:.3f}): {peer[2]['kld_mean']:.5f}, {verdict}"

    for r in meta["rows"]:
        c = by_path[os.path.abspath(r["path"])]
        below = [p for p in peers if p[0] <= r["bpw"] + tol]
        above = [p for p in peers if p[0] >= r["bpw"] - tol]
        lo, hi = c["kld_mean_ci95"]
        cells = [f"{r['budget']:g}", f"{r['bpw']:.3f}", r["types"], f"{r['predicted']:.5f}",
                 f"{c['kld_mean']:.5f} ({lo:.5f}, {hi:.5f})", f"{c['kld_mean'] / r['predicted']:.2f}",
                 f"{c['delta_ppl']:+.3f}", f"{100 * c['top1_agreement']:.2f} %",
                 versus(c, max(below, key=lambda p: p[0]) if below else None),
                 versus(c, min(above, key=lambda p: p[0]) if above else None)]
        print("| " + " | ".join(cells) + " |")
    print()
    print("| llama.cpp file | bits/weight | PPL | ΔPPL (95% CI) | KLD mean (95% CI) | KLD p99 | top-1 agreement |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for bpw, name, c in peers:
        print(row(name, None, bpw, c).replace(" | None |", " |"))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print_table(sys.argv[2])
    else:
        main()
