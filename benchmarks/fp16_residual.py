"""Should the embeddings and norms stay fp32 when a T4 trains in fp16? Measure what decides it.

    HF_HUB_OFFLINE=1 python benchmarks/fp16_residual.py [--examples 32]

fp16 stops at 65,504. Under fp16 autocast a matmul's output is fp16, but a sum
keeps its widest input's dtype, so the dtype of the embeddings decides the dtype
of the residual stream (the embedding plus every layer's output), which is where
a model's largest activations live. This script prints, for the course's tiny
model on the SQL training prompts:

1. the largest |hidden state| after each decoder layer (fp32 reference), and how
   close it comes to fp16's limit;
2. the answer loss computed three ways on the CPU: fp32; fp16 autocast with
   fp32 embeddings and norms (`prepare_for_training` on a T4); fp16 autocast
   with everything stored in fp16 (no preparation);
3. the planner's price of the fp32 parts for Qwen2.5-7B QLoRA on a T4.

The tiny model shows the mechanism and the cost; whether a given large model
overflows depends on its weights, which this machine cannot download (Qwen2
models are reported to reach inf in fp16: see docs/measurements.md).
"""

from __future__ import annotations

import argparse

import torch


def largest_hidden_states(model, batch) -> list[float]:
    """max |h| after every decoder layer, over the batch's real tokens."""
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    mask = batch["attention_mask"].bool()
    return [h[mask].abs().max().item() for h in out.hidden_states[1:]]


def loss_under(model, batch, autocast: bool) -> float:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
        return model(**batch).loss.float().item()


def main(argv: list[str] | None = None) -> int:
    from course_utils.data import load_examples, training_features
    from course_utils.hardware import GIB, HardwareProfile
    from course_utils.memory import T4
    from course_utils.models import load_model, load_tokenizer
    from course_utils.capstone import QLoRARecipe
    from course_utils.train import collate
    from course_utils.trainer import prepare_for_training

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=32)
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer()
    examples = load_examples("sql", "train", limit=args.examples)
    batch = collate([training_features(tokenizer, e) for e in examples], tokenizer.pad_token_id)
    fp16_max = torch.finfo(torch.float16).max

    reference = load_model(dtype=torch.float32, device="cpu")
    peaks = largest_hidden_states(reference, batch)
    print(f"SmolLM2-135M, {len(examples)} SQL training examples: largest |hidden state| per layer (fp32)")
    print("  " + ", ".join(f"{p:.0f}" for p in peaks))
    print(f"  maximum {max(peaks):.0f} = {max(peaks) / fp16_max:.2%} of fp16's limit {fp16_max:.0f} "
          f"(layer {peaks.index(max(peaks))})\n")

    fp32_loss = loss_under(reference, batch, autocast=False)
    t4_like = HardwareProfile("cuda", "T4 (imitated for the dtypes only)", 14.74, (7, 5), native_bf16=False)
    prepared = load_model(dtype=torch.float16, device="cpu")
    moved = prepare_for_training(prepared, t4_like)
    plain = load_model(dtype=torch.float16, device="cpu")
    rows = {"fp32 (reference)": fp32_loss,
            f"fp16 autocast, fp32 embeddings/norms ({moved} tensors upcast)": loss_under(prepared, batch, True),
            "fp16 autocast, everything stored in fp16": loss_under(plain, batch, True)}
    print("answer loss of the same batch:")
    for name, value in rows.items():
        print(f"  {name:<58} {value:.5f}  ({value - fp32_loss:+.1e} vs fp32)")

    recipe = QLoRARecipe()
    with_fp32 = recipe.plan(T4)
    kept_16 = with_fp32.replan(unquantized_dtype=torch.float16, weight_dtype=torch.float16)
    print(f"\nQwen2.5-7B QLoRA on a T4 (planner): {with_fp32.total / GIB:.2f} GiB with fp32 embeddings/head/norms, "
          f"{kept_16.total / GIB:.2f} GiB with fp16 ones: +{(with_fp32.total - kept_16.total) / GIB:.2f} GiB; "
          f"{T4.memory_gib - with_fp32.total / GIB:.2f} GiB of the T4's {T4.memory_gib} GiB stay free")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
