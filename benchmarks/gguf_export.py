"""GGUF export of the course's tiny model: seconds, size and the yardstick per type, read back by transformers.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/gguf_export.py [--types F32 F16 Q8_0 Q4_0] [--n 48]

Exports the 135M model (the course's converted copy: a plain fp32 checkpoint,
as a merged model would be) with `course_utils.gguf_export.export_gguf` in
each type, reads each file back with transformers' own GGUF loader (an
independent dequantizer), and scores it on the course's yardstick (answer loss
per answer token on `--n` validation questions) next to the checkpoint itself,
with the paired standard error of each difference. Also the largest logit
difference on one prompt. llama.cpp itself is not run here (not installed).

Not a test: docs/measurements.md gives the figures (tests/test_gguf_export.py
asserts the parity on the mini model).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from course_utils.adapters import split_examples
from course_utils.answers import answer_token_losses
from course_utils.compare import ExampleLosses, loss_difference
from course_utils.gguf_export import EXPORT_TYPES, export_gguf
from course_utils.models import load_model, load_tokenizer, resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", nargs="+", default=["F32", "F16", "Q8_0", "Q4_0"], choices=EXPORT_TYPES)
    parser.add_argument("--n", type=int, default=48, help="validation questions in the yardstick")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    source = resolve_model().path
    tokenizer = load_tokenizer()
    examples = split_examples("sql", "validation", args.n)
    prompt = tokenizer("SELECT name FROM employees WHERE salary > 100;", return_tensors="pt").input_ids
    reference = load_model(dtype=torch.float32, device="cpu")
    with torch.no_grad():
        reference_logits = reference(prompt).logits
    base = ExampleLosses.of(*answer_token_losses(reference, tokenizer, examples))
    print(f"checkpoint {source}: answer loss {base.mean:.4f} on {args.n} validation questions")
    with tempfile.TemporaryDirectory() as scratch:
        for kind in args.types:
            start = time.perf_counter()
            path = export_gguf(source, Path(scratch) / f"tiny-{kind}.gguf", kind, progress=False)
            seconds = time.perf_counter() - start
            model = AutoModelForCausalLM.from_pretrained(scratch, gguf_file=path.name, dtype=torch.float32).eval()
            with torch.no_grad():
                logit_gap = (model(prompt).logits - reference_logits).abs().max().item()
            losses = ExampleLosses.of(*answer_token_losses(model, tokenizer, examples))
            difference, error = loss_difference(base, losses)
            print(f"{kind:<5} {path.stat().st_size / 2**20:7.1f} MiB  export {seconds:5.1f} s  "
                  f"answer loss {losses.mean:.4f} ({difference:+.4f} +- {2 * error:.4f}, 2 SE)  "
                  f"largest logit difference {logit_gap:.3g}", flush=True)
            del model


if __name__ == "__main__":
    main()
