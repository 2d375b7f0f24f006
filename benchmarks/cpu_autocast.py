"""Seconds per LoRA and QLoRA training step on a CPU: fp32 compute (the course's choice) vs bf16.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/cpu_autocast.py [--steps 3] [--repeats 2] [--qlora]

The course computes in fp32 on a CPU. On CPUs with bf16 instructions (AVX512-BF16,
AMX) bf16 autocast makes a plain LoRA step faster; this measures by how much, on
the comparison budget's batch (4 SQL training examples, the course's r=8 adapter on
all linear layers of the 135M model). Each dtype runs `--steps` timed steps after
one untimed warm-up step, `--repeats` times, alternating; the best repeat counts,
since other processes only ever make a run slower. `--qlora` adds the same step on
an NF4 + double-quantization base with bitsandbytes computing in fp32 and in bf16
(`bnb_4bit_compute_dtype`; one timed step after a warm-up: the bf16 path is slow).

Not a test and not a recommendation: docs/measurements.md §2 gives the figures and
why the course keeps fp32 on a CPU.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import get_peft_model

from course_utils.adapters import experiment_settings, lora_config
from course_utils.data import collate, load_examples, training_features
from course_utils.hardware import detect
from course_utils.models import load_model, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--qlora", action="store_true", help="also time QLoRA steps, fp32 and bf16 compute")
    args = parser.parse_args()
    profile = detect()
    if profile.is_gpu:
        raise SystemExit("This measures the CPU path; on a GPU the course already uses bf16 or fp16 autocast.")
    tokenizer, settings = load_tokenizer(), experiment_settings(profile)
    features = [training_features(tokenizer, e, 256) for e in load_examples("sql", "train")[:settings.batch_size]]
    batch = collate(features, tokenizer.pad_token_id)

    def seconds_per_step(model, steps: int, autocast_bf16: bool = False) -> float:
        """Mean seconds of `steps` training steps of `model` on `batch`, after one untimed warm-up step."""
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        step()  # warm-up: first-call allocations and kernel choices
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps

    def lora_model(**load):
        torch.manual_seed(0)
        return get_peft_model(load_model(profile=profile, **load), lora_config(settings))

    rows = {}
    lora = lora_model()
    for _ in range(args.repeats):
        for name, bf16 in (("LoRA, fp32", False), ("LoRA, bf16 autocast", True)):
            rows[name] = min(rows.get(name, float("inf")), seconds_per_step(lora, args.steps, bf16))
    how_timed = {name: f"best of {args.repeats} x {args.steps} steps" for name in rows}
    if args.qlora:
        for name, dtype in (("QLoRA, fp32 compute", torch.float32), ("QLoRA, bf16 compute", torch.bfloat16)):
            model = lora_model(quantization="nf4", double_quant=True, compute_dtype=dtype, dtype=dtype)
            rows[name], how_timed[name] = seconds_per_step(model, 1), "one step"
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} thread(s); batch "
          f"{tuple(batch['input_ids'].shape)} (examples x padded tokens), r={settings.r} on {settings.targets}")
    for name, seconds in rows.items():
        print(f"{name:<22} {seconds:7.2f} s a step ({how_timed[name]})")
    print(f"LoRA, bf16 autocast / fp32: {rows['LoRA, bf16 autocast'] / rows['LoRA, fp32']:.2f}")
    if args.qlora:
        print(f"QLoRA, bf16 / fp32 compute: {rows['QLoRA, bf16 compute'] / rows['QLoRA, fp32 compute']:.2f}")


if __name__ == "__main__":
    main()
