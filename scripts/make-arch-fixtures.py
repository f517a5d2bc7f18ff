#!/usr/bin/env python3
"""llama.cpp's logits on synthetic models of every architecture: tests/fixtures/llama_cpp_logits.

For each architecture in ARCHS: `calq synth` writes a small random-weight model (Hugging Face
folder + F32 GGUF) with fixed options and seed; tools/llama_logits (built against a llama.cpp build
by scripts/build-llama-logits.sh) runs llama.cpp on PROMPTS; the float32 logits of every position go
to <arch>.bin and the options, prompts, llama.cpp commit and shapes to <arch>.json. calq's test
(src/model/llama_cpp_logits_test.cpp) re-synthesizes each model from the JSON and compares.

    scripts/make-arch-fixtures.py --llama-src /work/lcpp/src --llama-build /work/lcpp/build \
        [--calq build/src/cli/calq] [--only qwen2 ...] [--label "node-llama-cpp@3.22.1 bundled llama.cpp"]

A new architecture is one more entry in ARCHS (any option of `calq synth`; the test reads them all),
then `--only NAME`.
Standard library only.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The options of `calq synth` (SynthJob / SynthSpec field names; the flag is --name with '-'), all
# recorded in the JSON. On the command line: the shape, seed and dtype always, the others when they
# differ from these defaults (which are calq synth's own).
DEFAULTS = dict(layers=2, hidden=64, heads=4, kv_heads=0, head_dim=0, ffn=96, vocab=300, sliding_window=0,
                tied=False, max_position=4096, rope_theta=10000.0, rms_norm_eps=1e-5, rope_scaling="",
                rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                rope_original_max_position=8192, experts=0, experts_per_token=0, expert_ffn=0, shared_ffn=0,
                norm_topk_prob=None, seed=0, dtype="f32")

# One entry per fixture (its file name): the model type and what differs from DEFAULTS, each
# exercising something of its own. Every model type calq supports needs at least one.
ARCHS = {
    # Grouped-query attention, untied head.
    "llama": dict(model_type="llama", kv_heads=2, seed=1),
    # Llama 3.1's rotary scaling (rope_freqs in GGUF). It divides only the frequencies whose
    # wavelength exceeds original_max_position / low_freq_factor, which barely turn over a short
    # prompt at Llama 3.1's 8192; at 64, 6 of the 8 frequencies of head_dim 16 are divided by 8 and
    # one is blended, so the prompts see the scaling.
    "llama_rope_llama3": dict(model_type="llama", kv_heads=2, rope_theta=500000.0, rope_scaling="llama3",
                              rope_factor=8.0, rope_original_max_position=64, max_position=131072, seed=11),
    # Linear rotary scaling (rope.scaling.type / factor in GGUF).
    "llama_rope_linear": dict(model_type="llama", heads=2, kv_heads=1, rope_scaling="linear", rope_factor=4.0,
                              seed=12),
    # head_dim apart from hidden / heads (q_dim 128 > hidden 64), one kv head, Mistral's rope base
    # and window. llama.cpp runs "llama" files without a window, so the window is longer than the
    # prompts (as Mistral-7B-v0.1's 4096).
    "mistral": dict(model_type="mistral", kv_heads=1, head_dim=32, ffn=112, sliding_window=4096, max_position=32768,
                    rope_theta=1000000.0, seed=2),
    # q/k/v biases, tied embeddings, three layers, bf16 weights (as Qwen2 ships), eps 1e-6.
    "qwen2": dict(model_type="qwen2", layers=3, kv_heads=2, tied=True, max_position=32768, rope_theta=1000000.0,
                  rms_norm_eps=1e-6, seed=3, dtype="bf16"),
    # Per-head q/k RMSNorm, head_dim 32 apart from hidden / heads, tied, bf16 (as Qwen3-0.6B).
    "qwen3": dict(model_type="qwen3", kv_heads=2, head_dim=32, tied=True, max_position=40960, rope_theta=1000000.0,
                  rms_norm_eps=1e-6, seed=4, dtype="bf16"),
    # 4 experts, top 2, renormalised; GGUF "llama" with stacked experts.
    "mixtral": dict(model_type="mixtral", kv_heads=2, ffn=64, experts=4, experts_per_token=2, max_position=32768,
                    rope_theta=1000000.0, seed=5),
    # q/k/v biases, 4 experts of width 32, top 2 not renormalised, a shared expert of width 64 with its
    # sigmoid gate.
    "qwen2_moe": dict(model_type="qwen2_moe", kv_heads=2, experts=4, experts_per_token=2, expert_ffn=32, shared_ffn=64,
                      max_position=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, seed=6),
    # q/k norms, 6 experts of width 32, top 2 renormalised (as llama.cpp does for qwen3moe), head_dim 32.
    "qwen3_moe": dict(model_type="qwen3_moe", kv_heads=2, head_dim=32, experts=6, experts_per_token=2, expert_ffn=32,
                      max_position=40960, rope_theta=1000000.0, rms_norm_eps=1e-6, seed=7),
}

# Token ids (< every fixture's vocab): <s> at the start or not, </s>, <unk>, byte tokens, pieces.
PROMPTS = [
    [1, 259, 285, 271, 45, 290],
    [1, 17, 288, 299, 260, 261, 298, 2, 99, 150],
    [280, 3, 258, 297, 0, 291, 265, 272, 290, 284, 262, 287],
]


ALWAYS = {"layers", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab", "seed", "dtype"}


def synth_args(model_type, opts):
    args = ["synth", "--arch", model_type]
    for key, value in opts.items():
        if key not in ALWAYS and value == DEFAULTS[key]:
            continue
        if key == "tied":
            args.append("--tied")
        else:
            text = repr(value) if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)
            args += ["--" + key.replace("_", "-"), text]
    return args


def run(cmd, **kw):
    print("+ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-src", required=True, help="llama.cpp source tree (a git checkout)")
    ap.add_argument("--llama-build", required=True, help="its CMake build folder (libllama.so)")
    ap.add_argument("--calq", default=os.path.join(ROOT, "build", "src", "cli", "calq"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "llama_cpp_logits"))
    ap.add_argument("--only", nargs="*", help="architectures to (re)make (default: all)")
    ap.add_argument("--label", default="", help="where the llama.cpp source came from, recorded in the JSON")
    a = ap.parse_args()

    commit = subprocess.run(["git", "-C", a.llama_src, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", a.llama_src, "status", "--porcelain", "--untracked-files=no"],
                           check=True, capture_output=True, text=True).stdout.strip() != ""
    os.makedirs(a.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="calq-arch-fixtures-") as tmp:
        dumper = os.path.join(tmp, "llama_logits")
        run([os.path.join(HERE, "build-llama-logits.sh"), a.llama_src, a.llama_build, dumper], stdout=subprocess.DEVNULL)
        for arch, overrides in ARCHS.items():
            if a.only and arch not in a.only:
                continue
            overrides = dict(overrides)
            model_type = overrides.pop("model_type")
            opts = dict(DEFAULTS, **overrides)
            assert set(opts) == set(DEFAULTS), f"{arch}: unknown option in {sorted(set(opts) - set(DEFAULTS))}"
            folder, gguf = os.path.join(tmp, arch), os.path.join(tmp, arch + ".gguf")
            args = synth_args(model_type, opts)
            run([a.calq] + args + ["--out", folder, "--gguf", gguf, "--quiet"], stdout=subprocess.DEVNULL)
            bin_path = os.path.join(a.out, arch + ".bin")
            cmd = [dumper, gguf, "--out", bin_path, "--threads", "1"]
            for p in PROMPTS:
                cmd += ["-p", " ".join(str(t) for t in p)]
            info = json.loads(run(cmd, capture_output=True, text=True).stdout)
            assert info["lengths"] == [len(p) for p in PROMPTS], info
            rows = sum(len(p) for p in PROMPTS)
            assert os.path.getsize(bin_path) == rows * info["n_vocab"] * 4
            fixture = {
                "arch": arch,
                "synth": dict(model_type=model_type, **opts),
                "command": "calq " + " ".join(shlex.quote(x) for x in args) + " --out MODEL --gguf MODEL.gguf",
                "prompts": PROMPTS,
                "llama_cpp": {
                    "commit": commit + ("-dirty" if dirty else ""),
                    "source": a.label,
                    "run": "tools/llama_logits MODEL.gguf --threads 1: one llama_decode per prompt, logits at every "
                           "position, CPU, KV cache F32, flash attention off, no weight repacking",
                    "system_info": info["system_info"],
                },
                "logits": {"file": arch + ".bin", "dtype": "float32", "shape": [rows, info["n_vocab"]],
                           "layout": "prompts in order, positions in order, vocab values each; little-endian"},
            }
            text = json.dumps(fixture, indent=1)
            # One line per prompt.
            compact = "[\n" + ",\n".join("  " + json.dumps(p) for p in PROMPTS) + "\n ]"
            text = text.replace(json.dumps(PROMPTS, indent=1).replace("\n", "\n "), compact)
            assert json.loads(text) == fixture
            with open(os.path.join(a.out, arch + ".json"), "w") as f:
                f.write(text + "\n")
            print(f"{arch}: {rows} positions x {info['n_vocab']} logits -> {bin_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
