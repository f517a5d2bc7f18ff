"""calq: post-training quantization of LLMs, proven by measurement against full precision.

    import calq
    model = calq.open("../shared/models/calq-ref-llama")
    report = calq.quantize(model="../shared/models/calq-ref-llama", out="q4.gguf", format="q4_k",
                           method="gptq", calib="../shared/data/calib.txt", samples=32, seq_len=512)
    scores = calq.evaluate(reference="../shared/models/calq-ref-llama", models=["q4.gguf"],
                           text="../shared/data/heldout.txt", max_windows=8)

Every function raises calq.Error (with the library's message) for bad input; progress callbacks
receive {"stage", "done", "total", "message"} and return False to cancel.
"""
from ._calq import (Error, Model, OpenOptions, __version__, bisect, calib_check, calibrate, check, evaluate, formats,
                    inspect, merge_adapters, model_sha256, open, quantize)

__all__ = ["Error", "Model", "OpenOptions", "__version__", "bisect", "calib_check", "calibrate", "check", "evaluate",
           "formats", "inspect", "merge_adapters", "model_sha256", "open", "quantize"]
