"""LoRA's variants and QLoRA's parts on the course's yardstick, two seeds each.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python benchmarks/lora_variants.py            # every arm
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python benchmarks/lora_variants.py --arms DoRA PiSSA

Every arm trains the course's comparison run (`experiment_settings`: on a CPU 12 steps of 4
examples, r=8 on all linear layers, the course's CPU learning rate) with one change, for each seed in
`SEEDS`, through the same path as the cached adapters (`train_adapter`, the same batches for the same seed), and is
scored on the same validation questions (`YARDSTICK_EXAMPLES`). `compare_runs` then says, per pair,
whether a difference stands out of the noise (every seed, beyond two standard errors over the questions).

What each pair answers:

- DoRA vs LoRA, PiSSA vs LoRA: do PEFT's variants (`use_dora=True`,
  `init_lora_weights="pissa_niter_4"`) learn more in the same steps? (lesson 05)
- QLoRA vs LoRA: the gap lesson 09 measures.
- LoRA on the dequantized NF4 base vs QLoRA: both see the same weights Q(W); one computes with them
  stored in fp32, the other dequantizes NF4 codes in every forward pass. If the two agree, the 4-bit
  training path adds nothing to the gap and the rounded base explains it.
- LoRA on the dequantized NF4 base vs LoRA: the cost of the rounded base alone.
- QLoRA with LoftQ's start vs QLoRA, and vs LoRA: does starting B A at the best rank-r part of
  W - Q(W) help after training, and how much of the gap to LoRA is left? (lesson 09 shows the error it
  removes at step 0)

Not a test: minutes per arm on a CPU. The LoRA and QLoRA arms are the course's cached adapters; the
others are cached by `course_utils.qlora.cached_run_losses`, so a re-run prints at once. Prints
markdown tables for docs/measurements.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict

from course_utils.adapters import (SEEDS, YARDSTICK_EXAMPLES, adapter_example_losses, experiment_settings,
                                   train_adapter)
from course_utils.answers import answer_token_losses
from course_utils.compare import compare_runs
from course_utils.data import evenly_spaced, load_examples
from course_utils.hardware import detect
from course_utils.loftq import apply_loftq
from course_utils.models import load_tokenizer
from course_utils.qlora import cached_run_losses, dequantized_equivalent, load_format, original_weights

QLORA = dict(quantization="nf4", double_quant=True)
ARMS = ("LoRA", "DoRA", "PiSSA", "QLoRA", "LoRA on dequantized NF4", "QLoRA + LoftQ")
PAIRS = (("LoRA", "DoRA"), ("LoRA", "PiSSA"), ("LoRA", "QLoRA"), ("LoRA on dequantized NF4", "QLoRA"),
         ("LoRA", "LoRA on dequantized NF4"), ("QLoRA", "QLoRA + LoftQ"), ("LoRA", "QLoRA + LoftQ"))


def train_and_score(settings, profile, tokenizer, yardstick, load_base, lora_changes=None, before_training=None):
    """The cached adapters' training path (`train_adapter`) with another base or LoraConfig; (sums, counts)."""
    with tempfile.TemporaryDirectory() as scratch:
        model, _ = train_adapter(settings, profile, scratch, base=load_base(), lora_changes=lora_changes,
                                 before_training=before_training)
    return answer_token_losses(model.eval(), tokenizer, yardstick)


def arm_losses(arm: str, seed: int, profile, tokenizer, yardstick):
    if arm == "LoRA":
        return adapter_example_losses(experiment_settings(profile, seed=seed), profile=profile)
    if arm == "QLoRA":
        return adapter_example_losses(experiment_settings(profile, seed=seed, **QLORA), profile=profile)
    settings = experiment_settings(profile, seed=seed, **(QLORA if arm == "QLoRA + LoftQ" else {}))
    if arm == "DoRA":
        run = lambda: train_and_score(settings, profile, tokenizer, yardstick, lambda: load_format(None, profile=profile),
                                      dict(use_dora=True))
    elif arm == "PiSSA":
        run = lambda: train_and_score(settings, profile, tokenizer, yardstick, lambda: load_format(None, profile=profile),
                                      dict(init_lora_weights="pissa_niter_4"))
    elif arm == "LoRA on dequantized NF4":
        run = lambda: train_and_score(settings, profile, tokenizer, yardstick, lambda: dequantized_equivalent(
            load_format("nf4", True, profile), profile, adapter_name=None))
    elif arm == "QLoRA + LoftQ":
        originals = lambda: original_weights(load_format(None, profile=profile))
        run = lambda: train_and_score(settings, profile, tokenizer, yardstick,
                                      lambda: load_format("nf4", True, profile),
                                      before_training=lambda model: print(
                                          f"  LoftQ start removes {apply_loftq(model, originals()).removed:.1%} of the "
                                          "squared quantization error"))
    else:
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    key = {"kind": "benchmarks/lora_variants", "arm": arm, "settings": asdict(settings), "device": profile.kind,
           "questions": len(yardstick)}
    return cached_run_losses(key, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS, metavar="ARM",
                        help=f"arms to run (default: all): {', '.join(ARMS)}")
    args = parser.parse_args()
    profile = detect()
    print(profile)
    tokenizer = load_tokenizer()
    yardstick = evenly_spaced(load_examples("sql", "validation"), profile.pick(cpu=YARDSTICK_EXAMPLES, gpu=None))
    runs, seconds = {}, {}
    for arm in args.arms:
        start = time.perf_counter()
        runs[arm] = [arm_losses(arm, seed, profile, tokenizer, yardstick) for seed in SEEDS]
        seconds[arm] = time.perf_counter() - start
        print(f"{arm}: " + ", ".join(f"seed {s} {r.mean:.4f}" for s, r in zip(SEEDS, runs[arm]))
              + f" ({seconds[arm]:.0f} s, 0 if cached)")

    settings = experiment_settings(profile)
    print(f"\n{profile.kind} ({profile.name}); {settings.steps} steps of {settings.batch_size}, r={settings.r}, "
          f"alpha={settings.lora_alpha}, {settings.targets}, lr {settings.learning_rate:g}; answer loss on "
          f"{len(yardstick)} validation questions; seeds {SEEDS}\n")
    print("| arm | " + " | ".join(f"answer loss, seed {s}" for s in SEEDS) + " | mean |")
    print("|---|" + "---|" * (len(SEEDS) + 1))
    for arm, per_seed in runs.items():
        mean = sum(r.mean for r in per_seed) / len(per_seed)
        print(f"| {arm} | " + " | ".join(f"{r.mean:.4f}" for r in per_seed) + f" | {mean:.4f} |")
    print("\n| comparison (b - a) | " + " | ".join(f"seed {s}: difference ± 2 SE" for s in SEEDS) + " | verdict |")
    print("|---|" + "---|" * (len(SEEDS) + 1))
    for a, b in PAIRS:
        if a in runs and b in runs:
            c = compare_runs(a, runs[a], b, runs[b])
            print(f"| {b} - {a} | " + " | ".join(f"{d:+.4f} ± {2 * se:.4f}" for d, se in c.per_seed)
                  + f" | {f'{c.winner} better' if c.detected else 'no difference detected'} |")


if __name__ == "__main__":
    main()
