#!/usr/bin/env python3
"""Builds the outlier-methods table of issue 6 in docs/RESULTS.md: the reference model quantized
with each method at the same format, then every result and llama.cpp's imatrix k-quant files
evaluated against the full-precision model on identical tokens in ONE `calq eval --ref` pass.

Usage: bench/methods_table.py [--calq build/src/cli/calq] [--shared ../shared] [--work /tmp/calq-methods]
       [--threads 0] [--skip-eval];  bench/methods_table.py --table DIR  reprints the table.
Steps (each printed with its command):
  1. calq calibrate: calib.txt, 128 samples x 512 tokens, seed 0, statistics absmax, mean_abs,
     mean_sq and the Hessian -> stats.gguf (float inputs: every layer sees the float model's
     activations). Every method except rotate reuses it, so their rows differ only by the method.
  2. calq quantize --stats stats.gguf --method M --format F for each row; rotate+gptq rotates the
     model first, so it calibrates the rotated model itself (--calib, same samples, true sequential).
     Wall time and peak RSS are the quantize process' (calibration in step 1 not included).
  3. calq eval --ref <HF folder> --model ... on heldout.txt, ctx 512, all windows -> eval.json.
"""
import argparse, json, os, re, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_table import run, row  # noqa: E402

# (label, format, flags)
def rows_spec(stats, calib):
    S = ["--stats", stats]
    C = ["--calib", calib, "--samples", "128", "--seq-len", "512"]
    rows = []
    for fmt in ["int4-g128-asym", "int3-g128-asym"]:
        rows += [(f"{fmt} RTN", fmt, S + ["--method", "rtn"]),
                 (f"{fmt} GPTQ", fmt, S + ["--method", "gptq"]),
                 (f"{fmt} GPTQ act-order", fmt, S + ["--method", "gptq", "--act-order"]),
                 (f"{fmt} AWQ", fmt, S + ["--method", "awq"]),
                 (f"{fmt} AWQ+GPTQ", fmt, S + ["--method", "awq+gptq"]),
                 (f"{fmt} rotate+GPTQ", fmt, C + ["--method", "rotate+gptq"])]
    for act in ["int8-token", "int8-tensor"]:
        rows += [(f"W8A8 ({act}) RTN", "int8-pc-sym", S + ["--method", "rtn", "--act-quant", act]),
                 (f"W8A8 ({act}) SmoothQuant α 0.5", "int8-pc-sym",
                  S + ["--method", "smoothquant", "--sq-alpha", "0.5", "--act-quant", act]),
                 (f"W8A8 ({act}) SmoothQuant α 0.8", "int8-pc-sym",
                  S + ["--method", "smoothquant", "--sq-alpha", "0.8", "--act-quant", act])]
    rows += [("W8 + LLM.int8() (threshold 6)", "int8-pc-sym", S + ["--method", "rtn", "--act-quant", "llm-int8"]),
             ("W8 only (int8-pc-sym RTN, float activations)", "int8-pc-sym", S + ["--method", "rtn"]),
             ("q4_k GPTQ", "q4_k", S + ["--method", "gptq"]),
             ("q4_k RTN (importance)", "q4_k", S + ["--method", "rtn"]),
             ("q3_k GPTQ", "q3_k", S + ["--method", "gptq"]),
             ("q3_k RTN (importance)", "q3_k", S + ["--method", "rtn"])]
    return rows


PEERS = ["Q4_K_M-imatrix", "Q3_K_M-imatrix"]


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--calq", default=os.path.join(root, "build/src/cli/calq"))
    ap.add_argument("--shared", default=os.path.join(root, "../shared"))
    ap.add_argument("--work", default="/tmp/calq-methods")
    ap.add_argument("--threads", default="0")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--max-windows", default="0", help="evaluate the first N windows only (0: all)")
    ap.add_argument("--only", default="", help="regex: run only the rows whose label matches")
    ap.add_argument("--peers-json", default="",
                    help="eval.json of an earlier `calq eval --ref` run (same reference, text, ctx, tokenizer) that "
                         "already has llama.cpp's files, e.g. results_table.py's: reuse their rows")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    log = open(os.path.join(a.work, "log.txt"), "a")
    ref = os.path.join(a.shared, "models/calq-ref-llama")
    calib = os.path.join(a.shared, "data/calib.txt")
    text = os.path.join(a.shared, "data/heldout.txt")
    stats = os.path.join(a.work, "stats-hessian.gguf")
    T = ["--threads", a.threads]
    if not os.path.exists(stats):
        run([a.calq, "calibrate", "--model", ref, "--calib", calib, "--samples", "128", "--seq-len", "512",
             "--seed", "0", "--stats", "absmax,mean_abs,mean_sq,hessian", "--out", stats, "-q"] + T, log)
    rows = []
    for i, (label, fmt, flags) in enumerate(rows_spec(stats, calib)):
        if a.only and not re.search(a.only, label):
            continue
        out = os.path.join(a.work, f"m{i:02d}-" + re.sub(r"[^A-Za-z0-9_.+-]+", "_", label) + ".gguf")
        stdout, dt = run([a.calq, "quantize", "--model", ref, "--format", fmt, "--out", out, "--force", "-q"]
                         + flags + T, log)
        bpw = float(re.search(r"([0-9.]+) bits per weight", stdout).group(1))
        rss = float(re.search(r"peak RSS ([0-9.]+) MiB", stdout).group(1))
        rows.append({"label": label, "format": fmt, "path": out, "bpw": bpw, "seconds": dt, "peak_rss_mib": rss,
                     "command": "calq quantize --model REF --format " + fmt + " " + " ".join(flags)})
    peers = [os.path.join(a.shared, f"peer-tests/llama.cpp-quants/calq-ref-llama-{p}.gguf") for p in PEERS]
    if not a.skip_eval:
        cmd = [a.calq, "eval", "--exact", "--ref", ref, "--text", text, "--ctx", "512", "--tokenizer",
               os.path.join(ref, "tokenizer.json"), "--json", os.path.join(a.work, "eval.json"), "-q"] + T
        if a.max_windows != "0":
            cmd += ["--max-windows", a.max_windows]
        for r in rows:
            cmd += ["--model", r["path"]]
        if not a.peers_json:
            for p in peers:
                cmd += ["--model", p]
        run(cmd, log)
    json.dump({"rows": rows, "peers": peers, "peers_json": a.peers_json},
              open(os.path.join(a.work, "rows.json"), "w"), indent=1)
    print_table(a.work)


def print_table(work):
    meta = json.load(open(os.path.join(work, "rows.json")))
    ev = json.load(open(os.path.join(work, "eval.json")))
    by_path = {os.path.abspath(c["model"]): c for c in ev["candidates"]}
    if meta.get("peers_json"):
        other = json.load(open(meta["peers_json"]))
        for key in ["token_ids_sha256", "ctx", "n_windows"]:
            assert other[key] == ev[key], f"--peers-json differs in {key}"
        by_path.update({os.path.abspath(c["model"]): c for c in other["candidates"]})
    print(f"\nreference PPL {ev['candidates'][0]['ppl_ref']:.4f}\n")
    print("| method | bits/weight | PPL | ΔPPL (95% CI) | KLD mean (95% CI) | KLD p99 | top-1 agreement "
          "| quantize s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in meta["rows"]:
        c = by_path.get(os.path.abspath(r["path"]))
        if c is None:
            continue
        base = row(r["label"], None, r["bpw"], c).replace(" | None |", " |")
        print(base + f" {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} |")
    for p in meta["peers"]:
        c = by_path.get(os.path.abspath(p))
        if c is None:
            continue
        label = "llama.cpp " + os.path.basename(p).replace("calq-ref-llama-", "").replace(".gguf", "")
        print(row(label, None, c.get("bits_per_weight", float("nan")), c).replace(" | None |", " |") + " — | — |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print_table(sys.argv[2])
    else:
        main()
