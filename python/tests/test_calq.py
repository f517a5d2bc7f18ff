"""pytest for the calq Python package on the reference model in ../shared (CALQ_SHARED_DIR).

Covers open/tokenize, quantize (with a progress callback and cancellation), evaluate against full
precision, and number formats on numpy arrays with their errors (bad format name, wrong dtype,
NaN input, wrong shape).
"""
import json
import os
import pathlib

import numpy as np
import pytest

import calq

SHARED = pathlib.Path(os.environ.get("CALQ_SHARED_DIR", pathlib.Path(__file__).resolve().parents[2] / ".." / "shared"))
REF = SHARED / "models" / "calq-ref-llama"
HELDOUT = SHARED / "data" / "heldout.txt"
CALIB = SHARED / "data" / "calib.txt"

needs_shared = pytest.mark.skipif(not REF.is_dir() and not os.environ.get("CALQ_REQUIRE_SHARED"),
                                  reason="reference model not found (set CALQ_SHARED_DIR)")


@needs_shared
def test_open_and_tokenize():
    m = calq.open(str(REF))
    info = m.info
    assert info["format"] == "hf"
    assert info["architecture"] == "llama"
    assert info["n_params"] > 20_000_000
    ids = m.tokenize("The quick brown fox")
    assert len(ids) > 2 and all(isinstance(i, int) for i in ids)
    assert m.detokenize(ids).strip() == "The quick brown fox"


@needs_shared
def test_open_missing_raises_calq_error(tmp_path):
    with pytest.raises(calq.Error, match="no such file"):
        calq.open(str(tmp_path / "missing"))


@needs_shared
def test_quantize_then_evaluate(tmp_path):
    out = tmp_path / "q8.gguf"
    stages = []

    def progress(p):
        stages.append(p["stage"])

    r = calq.quantize(model=str(REF), out=str(out), format="q8_0", threads=2, progress=progress)
    assert out.stat().st_size > 0
    assert r["form"] == "format"
    assert 8.0 < r["bits_per_weight"] < 9.0
    assert stages.count("tensor") == r["n_tensors"]
    assert "method=rtn;format=q8_0" in r["recipe"]

    e = calq.evaluate(reference=str(REF), models=[str(out)], text=str(HELDOUT), ctx=128, max_windows=4, threads=2)
    assert e["n_windows"] == 4
    (score,) = e["models"]
    assert 0 < score["kld"] < 0.01  # q8_0 is close to the float model
    lo, hi = score["kld_ci"]
    assert lo <= score["kld"] <= hi
    assert score["top1_agreement"] > 0.9
    # The q8_0 model ran on the integer kernels (the default); exact=True dequantizes instead.
    calls = e["report"]["kernels"]["calls"]
    assert any(k.startswith("int8/") and k.endswith("/q8_0") for k in calls), calls
    x = calq.evaluate(reference=str(REF), models=[str(out)], text=str(HELDOUT), ctx=128, max_windows=4, threads=2,
                      exact=True)
    assert all(k.startswith("float") for k in x["report"]["kernels"]["calls"]), x["report"]["kernels"]
    assert 0 < x["models"][0]["kld"] < 0.01


@needs_shared
def test_quantize_cancel_and_option_errors(tmp_path):
    out = tmp_path / "cancel.gguf"
    with pytest.raises(calq.Error, match="cancelled"):
        calq.quantize(model=str(REF), out=str(out), format="q8_0", progress=lambda p: p["stage"] != "tensor")
    assert not out.exists()
    with pytest.raises(calq.Error, match="damp"):
        calq.quantize(model=str(REF), out=str(out), format="q4_k", options={"gptq.damp": 0.02})
    with pytest.raises(calq.Error, match="q4_kk"):
        calq.quantize(model=str(REF), out=str(out), format="q4_kk")


@needs_shared
def test_quantize_training_memory_and_json(tmp_path):
    out = tmp_path / "q.gguf"
    # Refused before any work (the calibration text does not even exist): the estimate names max_memory.
    with pytest.raises(calq.Error, match=r"qat-e2e needs an estimated .* more than max_memory 1.0 MiB"):
        calq.quantize(model=str(REF), out=str(out), format="int4-g128-asym", method="gptq+qat-e2e",
                      calib=str(tmp_path / "missing.txt"), max_memory=1 << 20)
    assert not out.exists()
    # Layer 0 trained (the other layers kept float: nothing to train there), its curve in the report.
    js = tmp_path / "q.json"
    rules = [r"^blk\.[1-9]\.=f32", r"^(token_embd|output)\.=q8_0"]
    r = calq.quantize(model=str(REF), out=str(out), format="int4-g128-asym", method="gptq+qat-block",
                      calib=str(CALIB), samples=4, seq_len=64, rules=rules, max_memory=64 << 30, json_out=str(js),
                      threads=2)
    report = r["report"]
    assert json.loads(js.read_text()) == report
    (memory,) = report["training_memory"]
    assert memory["method"] == "qat-block" and 0 < memory["bytes"] < 64 << 30
    first = report["training"][0]
    assert first["method"] == "qat-block" and first["layer"] == 0 and first["trained"]
    assert first["steps"] == len(first["curve"]) > 0
    assert all(not t["trained"] and t["steps"] == 0 for t in report["training"][1:])


def test_formats_round_trip():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    for name in ["q4_k", "q8_0", "int4-g128-asym", "nf4-dq", "fp8-e4m3"]:
        data = calq.formats.quantize(x, name)
        assert isinstance(data, bytes)
        y = calq.formats.dequantize(data, name, x.shape)
        assert y.dtype == np.float32 and y.shape == x.shape
        rel = np.linalg.norm(x - y) / np.linalg.norm(x)
        assert rel < 0.2, (name, rel)
    # importance changes the q4_k encoding's choices, not its size
    imp = rng.uniform(0.1, 10, 256).astype(np.float32)
    assert len(calq.formats.quantize(x, "q4_k", importance=imp)) == len(calq.formats.quantize(x, "q4_k"))
    assert "q4_k" in calq.formats.list()
    assert calq.formats.info("q4_k")["gguf_native"]


def test_formats_errors():
    x = np.ones((2, 256), dtype=np.float32)
    with pytest.raises(calq.Error, match="nope"):
        calq.formats.quantize(x, "nope")
    with pytest.raises(calq.Error, match="float64"):
        calq.formats.quantize(x.astype(np.float64), "q4_k")
    bad = x.copy()
    bad[1, 3] = np.nan
    with pytest.raises(calq.Error):
        calq.formats.quantize(bad, "q4_k")
    with pytest.raises(calq.Error, match="100"):
        calq.formats.quantize(np.ones((2, 100), dtype=np.float32), "q4_k")
    with pytest.raises(calq.Error, match="bytes"):
        calq.formats.dequantize(b"\0" * 10, "q4_k", (2, 256))


@needs_shared
def test_evaluate_tasks_and_perplexity_alone(tmp_path):
    items = SHARED / "data" / "hellaswag-val-1000.jsonl"
    out = tmp_path / "eval.json"
    e = calq.evaluate(reference="", models=[str(REF)], text=str(HELDOUT), ctx=64, max_windows=2,
                      hellaswag=str(items), mc_items=3, generate=["Once upon a time"], max_new_tokens=4,
                      json_out=str(out), threads=2)
    (score,) = e["models"]
    assert score["ppl"] > 1
    rep = e["report"]
    assert rep["n_windows"] == 2 and rep["ppl"] == score["ppl"]
    assert rep["multiple_choice"]["n_items"] == 3
    assert len(rep["multiple_choice"]["models"][0]["chosen"]) == 3
    assert len(rep["generate"][0]["outputs"][0]["ids"]) == 4
    import json
    assert json.loads(out.read_text()) == rep
    with pytest.raises(calq.Error, match="nothing to evaluate"):
        calq.evaluate(reference="", models=[str(REF)])


@needs_shared
def test_progress_exception_and_ctrl_c_stop_the_work(tmp_path):
    out = tmp_path / "q.gguf"

    def boom(p):
        if p["stage"] == "tensor":
            raise ValueError("stop here")

    with pytest.raises(ValueError, match="stop here"):
        calq.quantize(model=str(REF), out=str(out), format="q8_0", progress=boom)
    assert not out.exists()

    # Ctrl-C (SIGINT, as _thread.interrupt_main raises it) during a quantization: the work stops at
    # the next unit and KeyboardInterrupt is raised, no output written. The GIL is released while
    # calq works, so the timer thread runs.
    import _thread
    import threading
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        calq.quantize(model=str(REF), out=str(out), format="q4_k", method="rtn", threads=1)
    timer.join()
    assert not out.exists()


@needs_shared
def test_inspect_check_bisect_calib_check(tmp_path):
    info = calq.inspect(str(REF), weights=True)
    assert info["architecture"] == "llama"
    assert info["weight_stats"] and "model.layers.0.self_attn.q_proj.weight" in info["text"]
    q = tmp_path / "q.gguf"
    calq.quantize(model=str(REF), out=str(q), format="q4_0", threads=2)
    c = calq.check(str(q))
    assert c["ok"] and c["errors"] == 0
    assert not calq.check(str(HELDOUT))["ok"]  # not a GGUF file: an error finding, not an exception
    b = calq.bisect(str(REF), str(q), str(HELDOUT), ctx=64, max_windows=2, threads=2)
    assert b["candidates"] > 0 and b["evaluations"] == len(b["steps"])
    assert b["kld"] <= b["goal"] or not b["found"]
    with pytest.raises(calq.Error, match="tolerance"):
        calq.bisect(str(REF), str(q), str(HELDOUT), tolerance=-1.0)
    d = calq.calib_check(str(REF), str(CALIB), str(HELDOUT), samples=2, seq_len=64, threads=2)
    assert d["sites"] and d["threshold"] == 0.15


@needs_shared
def test_calibrate_and_quantize_on_generated_samples(tmp_path):
    # Data-free calibration: "generate:N" samples N sequences from the model itself.
    stages = []
    r = calq.calibrate(model=str(REF), out=str(tmp_path / "gen.gguf"), text="generate:2", seq_len=24, seed=3,
                       stats="absmax,mean_sq", threads=2, progress=lambda p: stages.append(p["stage"]))
    assert r["samples"] == 2 and r["seq_len"] == 24
    assert "generate" in stages
    q = calq.quantize(model=str(REF), out=str(tmp_path / "q.gguf"), format="int4-g128-asym", method="gptq",
                      calib="generate:2,greedy=4", seq_len=24, threads=2)
    assert q["n_quantized"] > 0
    with pytest.raises(calq.Error, match="generate:x.*number of sequences"):
        calq.calibrate(model=str(REF), out=str(tmp_path / "bad.gguf"), text="generate:x")


def _write_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors.items():
        data = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


@needs_shared
def test_adapters_evaluate_and_merge(tmp_path):
    """A PEFT LoRA folder written as peft's save_pretrained names it, evaluated and merged."""
    import hashlib
    cfg = json.loads((REF / "config.json").read_text())
    layers, hidden, heads = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or hidden // heads
    kv = cfg.get("num_key_value_heads", heads) * head_dim
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(layers):
        for name, out in (("q_proj", heads * head_dim), ("v_proj", kv)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            tensors[prefix + ".lora_A.weight"] = rng.normal(0, 0.05, (2, hidden))
            tensors[prefix + ".lora_B.weight"] = rng.normal(0, 0.05, (out, 2))
    sha = hashlib.sha256()
    for f in sorted(REF.glob("*.safetensors")):
        sha.update(f.read_bytes())
    sha.update((REF / "config.json").read_bytes())
    assert calq.model_sha256(str(REF)) == sha.hexdigest()

    def folder(name, base_hash):
        d = tmp_path / name
        d.mkdir()
        _write_safetensors(d / "adapter_model.safetensors", tensors)
        (d / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, "lora_dropout": 0.0,
             "target_modules": ["q_proj", "v_proj"], "bias": "none", "fan_in_fan_out": False,
             "modules_to_save": None, "use_rslora": False, "use_dora": False, "rank_pattern": {},
             "alpha_pattern": {}}))
        (d / "calq_adapter.json").write_text(json.dumps({"base_model_sha256": base_hash}))
        return str(d)

    good, bad = folder("good", sha.hexdigest()), folder("bad", "0" * 64)
    text = tmp_path / "text.txt"  # a short text: tokenizing all of heldout.txt would take seconds
    text.write_text(HELDOUT.read_text()[:4000])
    e = calq.evaluate(reference="", models=[str(REF)], text=str(text), ctx=64, max_windows=1, adapter=good, threads=2)
    (score,) = e["models"]
    assert score["adapters"]["count"] == 2 * layers and score["adapters"]["rank_max"] == 2
    assert score["adapters"]["bits_per_weight"] > 0
    assert e["report"]["adapters"]["base_model_sha256"] == sha.hexdigest()
    with pytest.raises(calq.Error, match="0000000000"):
        calq.evaluate(reference="", models=[str(REF)], text=str(text), ctx=64, max_windows=1, adapter=bad)
    # merge_adapters (covered end to end by the CLI tests): an existing output is refused before any work.
    out = tmp_path / "merged.gguf"
    out.write_text("keep")
    with pytest.raises(calq.Error, match="force"):
        calq.merge_adapters(model=str(REF), adapter=good, out=str(out))
    assert out.read_text() == "keep"


@needs_shared
def test_quantize_export_gptq_folder_opens(tmp_path):
    out = tmp_path / "gptq"
    r = calq.quantize(model=str(REF), out=str(out), format="int4-g128-sym", export="gptq")
    assert (out / "config.json").is_file() and (out / "quantize_config.json").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "gptq"
    assert cfg["quantization_config"]["checkpoint_format"] == "gptq"
    # The linears at ~4.1 bits, the tied bf16 embedding (a third of the parameters) kept as it is.
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    source = sum(f.stat().st_size for f in REF.glob("*.safetensors"))
    assert size < 0.6 * source
    assert 4.0 < r["bits_per_weight"] < 16.0
    assert calq.open(str(out)).info["architecture"] == "llama"
    with pytest.raises(calq.Error, match="AWQ checkpoints hold 4 bits"):
        calq.quantize(model=str(REF), out=str(tmp_path / "awq"), format="int8-g128-sym", export="awq")
    assert not (tmp_path / "awq").exists()
