#!/usr/bin/env python3
"""Builds the docs/RESULTS.md table of issue 5: quantize the reference model in several formats with
each range observer, then evaluate every result and llama.cpp's own quantizations against the
full-precision model on identical tokens in ONE streaming `calq eval --ref` pass.

Usage: bench/results_table.py [--calq build/src/cli/calq] [--shared ../shared] [--work /tmp/calq-results]
       [--threads 0] [--skip-eval]
Steps (each printed with its command):
  1. calq calibrate: calib.txt, 128 samples x 512 tokens, seed 0 -> stats.gguf (float activations).
  2. calq quantize --stats stats.gguf --format F --observer O for every (F, O) of the table. Formats
     whose scale is fixed by their definition (GGUF blocks, nf4, fp8) ignore the observer: all four
     observers are run and their files compared byte for byte; identical files are evaluated once.
  3. calq quantize --calib (true sequential) for q4_k, and q4_k without importance, for contrast.
  4. calq eval --ref <HF folder> --model ... (all candidates + llama.cpp's files) on heldout.txt,
     ctx 512, all windows, tokenized with the HF tokenizer -> eval.json.
  5. Prints the markdown table.
"""
import argparse, hashlib, json, os, re, subprocess, sys, time

FORMATS = ["int8-pc-sym", "int4-g128-sym", "int4-g128-asym", "int3-g128-asym",
           "nf4-dq", "fp8-e4m3", "q4_0", "q4_k", "q6_k", "q8_0"]
OBSERVERS = ["minmax", "percentile", "kl", "mse"]
PEERS = ["Q8_0", "Q4_K_M", "Q4_K_M-imatrix", "Q3_K_M-imatrix", "Q2_K-imatrix"]


def run(cmd, log):
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.time() - t0
    log.write("$ " + " ".join(cmd) + "\n" + p.stdout + p.stderr + f"[{dt:.1f} s]\n")
    log.flush()
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout, dt


def gguf_data_offset(buf):
    """Offset of a GGUF v3 file's data section (header walked per the GGUF spec)."""
    import struct
    pos = 4 + 4
    n_tensors, n_kv = struct.unpack_from("<QQ", buf, pos)
    pos += 16
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    alignment = 32

    def skip_value(t, pos):
        if t in sizes:
            return pos + sizes[t]
        if t == 8:
            (n,) = struct.unpack_from("<Q", buf, pos)
            return pos + 8 + n
        if t == 9:
            et, n = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if et in sizes:
                return pos + sizes[et] * n
            for _ in range(n):
                pos = skip_value(et, pos)
            return pos
        raise ValueError(f"bad GGUF value type {t}")

    for _ in range(n_kv):
        (klen,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8:pos + 8 + klen].decode()
        pos += 8 + klen
        (t,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", buf, pos)
        pos = skip_value(t, pos)
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", buf, pos)
        pos += 8 + nlen
        (nd,) = struct.unpack_from("<I", buf, pos)
        pos += 4 + 8 * nd + 4 + 8
    return (pos + alignment - 1) // alignment * alignment


def sha(path):
    """SHA-256 of the tensor data only (the metadata records the observer in calq.recipe)."""
    buf = open(path, "rb").read()
    return hashlib.sha256(buf[gguf_data_offset(buf):]).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--calq", default=os.path.join(root, "build/src/cli/calq"))
    ap.add_argument("--shared", default=os.path.join(root, "../shared"))
    ap.add_argument("--work", default="/tmp/calq-results")
    ap.add_argument("--threads", default="0")
    ap.add_argument("--skip-eval", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    log = open(os.path.join(a.work, "log.txt"), "a")
    ref = os.path.join(a.shared, "models/calq-ref-llama")
    calib = os.path.join(a.shared, "data/calib.txt")
    text = os.path.join(a.shared, "data/heldout.txt")
    stats = os.path.join(a.work, "stats.gguf")
    T = ["--threads", a.threads]

    if not os.path.exists(stats):
        run([a.calq, "calibrate", "--model", ref, "--calib", calib, "--samples", "128", "--seq-len", "512",
             "--seed", "0", "--out", stats, "-q"] + T, log)

    rows = []  # (label, format, observer, path, bpw, seconds)
    for fmt in FORMATS:
        shas = {}
        for obs in OBSERVERS:
            out = os.path.join(a.work, f"{fmt}-{obs}.gguf")
            stdout, dt = run([a.calq, "quantize", "--model", ref, "--stats", stats, "--format", fmt,
                              "--observer", obs, "--out", out, "--force", "-q"] + T, log)
            bpw = float(re.search(r"([0-9.]+) bits per weight", stdout).group(1))
            digest = sha(out)
            if digest in shas:
                rows.append((f"{fmt}", fmt, obs, None, bpw, dt, shas[digest]))
            else:
                shas[digest] = obs
                rows.append((f"{fmt}", fmt, obs, out, bpw, dt, None))
    extra = [("q4_k, true sequential (--calib)", ["--calib", calib, "--samples", "128", "--seq-len", "512"],
              "q4_k-trueseq"),
             ("q4_k, no importance", ["--stats", stats, "--no-importance"], "q4_k-noimp")]
    for label, flags, name in extra:
        out = os.path.join(a.work, name + ".gguf")
        stdout, dt = run([a.calq, "quantize", "--model", ref, "--format", "q4_k", "--out", out, "--force", "-q"]
                         + flags + T, log)
        bpw = float(re.search(r"([0-9.]+) bits per weight", stdout).group(1))
        rows.append((label, "q4_k", "minmax", out, bpw, dt, None))

    peers = [os.path.join(a.shared, f"peer-tests/llama.cpp-quants/calq-ref-llama-{p}.gguf") for p in PEERS]
    candidates = [r[3] for r in rows if r[3]] + peers
    eval_json = os.path.join(a.work, "eval.json")
    if not a.skip_eval:
        cmd = [a.calq, "eval", "--exact", "--ref", ref, "--text", text, "--ctx", "512", "--tokenizer",
               os.path.join(ref, "tokenizer.json"), "--json", eval_json, "-q"] + T
        for c in candidates:
            cmd += ["--model", c]
        run(cmd, log)
    json.dump({"rows": rows, "peers": peers}, open(os.path.join(a.work, "rows.json"), "w"), indent=1)
    print_table(a.work)


def print_table(work):
    meta = json.load(open(os.path.join(work, "rows.json")))
    ev = json.load(open(os.path.join(work, "eval.json")))
    by_path = {os.path.abspath(c["model"]): c for c in ev["candidates"]}
    print(f"\nreference PPL {ev['candidates'][0]['ppl_ref']:.4f}\n")
    print("| format | observer | bits/weight | PPL | ΔPPL (95% CI) | KLD mean (95% CI) | KLD p99 | top-1 agreement |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, fmt, obs, path, bpw, dt, same_as in meta["rows"]:
        if path is None:
            print(f"| {label} | {obs} | {bpw:.3f} | = {same_as} (identical bytes) | | | | |")
            continue
        c = by_path[os.path.abspath(path)]
        print(row(label, obs, bpw, c))
    for p in meta["peers"]:
        c = by_path[os.path.abspath(p)]
        print(row("llama.cpp " + os.path.basename(p).replace("calq-ref-llama-", "").replace(".gguf", ""), "—",
                  c.get("bits_per_weight", float("nan")), c))


def row(label, obs, bpw, c):
    return (f"| {label} | {obs} | {bpw:.3f} | {c['ppl']:.3f} | {c['delta_ppl']:+.3f} "
            f"({c['delta_ppl_ci95'][0]:+.3f}, {c['delta_ppl_ci95'][1]:+.3f}) | {c['kld_mean']:.5f} "
            f"({c['kld_mean_ci95'][0]:.5f}, {c['kld_mean_ci95'][1]:.5f}) | {c['kld_p99']:.4f} | "
            f"{100 * c['top1_agreement']:.2f} % |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print_table(sys.argv[2])
    else:
        main()
