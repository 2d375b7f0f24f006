"""Seconds per training step with the LM head on every position vs only where labels are (`trim_to_answers`).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/answer_logits.py [--steps 4] [--repeats 2] [--qlora]

With the prompt masked, only the positions that predict answer tokens need
logits. `course_utils.data.trim_to_answers` asks the model for those only
(`logits_to_keep`), for training (both loops) and the yardstick. This times one
training step (forward, backward, AdamW) of the comparison budget's recipe (r=8
on all linear layers of the 135M model, batches of 4) on the first `--steps`
batches the Trainer path draws (its length-bucketed sampler, seed 0), both ways,
after one untimed warm-up step, `--repeats` times alternating; the best repeat
counts, since other processes only ever make a run slower. It also prints which
share of the positions keep their logits over a whole epoch of such batches.

Not a test: docs/measurements.md §2 gives the figures.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import get_peft_model

from course_utils.adapters import experiment_settings, lora_config
from course_utils.data import collate, load_examples, training_features, trim_to_answers
from course_utils.hardware import detect
from course_utils.models import load_model, load_tokenizer
from course_utils.trainer import LengthBucketSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--qlora", action="store_true", help="also on an NF4 + double-quantization base")
    args = parser.parse_args()
    profile = detect()
    tokenizer, settings = load_tokenizer(), experiment_settings(profile)
    features = [training_features(tokenizer, e, 256) for e in load_examples("sql", "train")]
    sampler = LengthBucketSampler([len(f["input_ids"]) for f in features], settings.batch_size, seed=0)
    batches = [collate([features[i] for i in rows], tokenizer.pad_token_id) for rows in sampler.batches()]
    kept = sum(trim_to_answers(b)["logits_to_keep"] * len(b["labels"]) for b in batches)
    positions = sum(b["labels"].numel() for b in batches)
    answers = sum(int((b["labels"] != -100).sum()) for b in batches)
    print(f"an epoch of {len(batches)} batches of {settings.batch_size}: {positions:,} positions, logits kept for "
          f"{kept:,} ({kept / positions:.1%}); answer tokens {answers:,} ({answers / positions:.1%})")
    timed = [{k: v.to(profile.device) for k, v in b.items()} for b in batches[:args.steps + 1]]

    def seconds_per_step(model, trim: bool) -> float:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)

        def step(batch) -> None:
            loss = model(**(trim_to_answers(batch) if trim else batch)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        step(timed[0])  # warm-up: first-call allocations and kernel choices
        start = time.perf_counter()
        for batch in timed[1:]:
            step(batch)
        return (time.perf_counter() - start) / args.steps

    arms = {"LoRA": {}} | ({"QLoRA (NF4 + DQ)": dict(quantization="nf4", double_quant=True)} if args.qlora else {})
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} thread(s); "
          f"r={settings.r} on {settings.targets}; best of {args.repeats} x {args.steps} steps")
    for arm, load in arms.items():
        torch.manual_seed(0)
        model = get_peft_model(load_model(profile=profile, **load), lora_config(settings))
        model.train()
        best = {trim: float("inf") for trim in (False, True)}
        for _ in range(args.repeats):
            for trim in best:
                best[trim] = min(best[trim], seconds_per_step(model, trim))
        print(f"{arm:<18} every position {best[False]:6.2f} s a step, answer positions only {best[True]:6.2f} s "
              f"({best[True] / best[False]:.2f})")


if __name__ == "__main__":
    main()
