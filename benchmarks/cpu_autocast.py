"""Seconds per LoRA training step on a CPU: fp32 (the course's choice) vs bf16 autocast.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/cpu_autocast.py [--steps 3] [--repeats 2]

The course computes in fp32 on a CPU. On CPUs with bf16 instructions (AVX512-BF16,
AMX) bf16 autocast makes a plain LoRA step faster; this measures by how much, on
the comparison budget's batch (4 SQL training examples, the course's r=8 adapter on
all linear layers of the 135M model). Each dtype runs `--steps` timed steps after
one untimed warm-up step, `--repeats` times, alternating; the best repeat counts,
since other processes only ever make a run slower.

Not a test and not a recommendation: docs/measurements.md §2 gives the figure and
why the course keeps fp32 (QLoRA's 4-bit layers on a CPU need fp32 compute, so
LoRA in bf16 against QLoRA in fp32 would confound lesson 08's comparison).
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
    args = parser.parse_args()
    profile = detect()
    if profile.is_gpu:
        raise SystemExit("This measures the CPU path; on a GPU the course already uses bf16 or fp16 autocast.")
    tokenizer, settings = load_tokenizer(), experiment_settings(profile)
    torch.manual_seed(0)
    model = get_peft_model(load_model(profile=profile), lora_config(settings))
    features = [training_features(tokenizer, e, 256) for e in load_examples("sql", "train")[:settings.batch_size]]
    batch = collate(features, tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    best = {}
    for _ in range(args.repeats):
        for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
            step(bf16)  # warm-up: first-call allocations and kernel choices
            start = time.perf_counter()
            for _ in range(args.steps):
                step(bf16)
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) / args.steps)
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} thread(s); batch "
          f"{tuple(batch['input_ids'].shape)} (examples x padded tokens), LoRA r={settings.r} on {settings.targets}")
    for name, seconds in best.items():
        print(f"{name:<14} {seconds:6.2f} s a step (best of {args.repeats} x {args.steps} steps)")
    print(f"bf16 autocast / fp32: {best['bf16 autocast'] / best['fp32']:.2f}")


if __name__ == "__main__":
    main()
