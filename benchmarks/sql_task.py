"""Calibrate the text-to-SQL task: base model vs a LoRA adapter, by group.

    HF_HUB_OFFLINE=1 python benchmarks/sql_task.py [--steps 30] [--n 240]

Prints a markdown table (paste it into data/README.md). The task is meant to
sit where later lessons can show differences: the base model near 0%, a LoRA
adapter trained a few minutes on a CPU well above 60% overall and clearly
below 100% on held-out templates and databases. Not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import time

from course_utils.data import evenly_spaced, load_examples
from course_utils.hardware import detect
from course_utils.models import load_model, load_tokenizer
from course_utils.train import adapter_report, course_adapter_settings, evaluate_model, read_train_log, \
    train_lora_adapter

GROUPS = ("seen", "heldout_template", "heldout_database")


def row(name: str, report, extra: str = "") -> str:
    groups = report.by_group()
    cells = " | ".join(f"{groups.get(g, float('nan')):.1%}" for g in GROUPS)
    return f"| {name} | {report.accuracy:.1%} | {cells} | {extra} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="LoRA steps (default: the course adapter's)")
    parser.add_argument("--n", type=int, default=240, help="test examples (evenly spaced)")
    args = parser.parse_args()
    profile = detect()
    print(profile)
    examples = evenly_spaced(load_examples("sql", "test"), args.n)
    tokenizer = load_tokenizer()

    start = time.perf_counter()
    base = evaluate_model(load_model(), tokenizer, examples)
    base_seconds = time.perf_counter() - start

    settings = course_adapter_settings(profile) if args.steps is None else course_adapter_settings(profile,
                                                                                                  steps=args.steps)
    folder = train_lora_adapter(settings, profile)
    log = read_train_log(folder)
    lora = adapter_report(settings, "test", args.n, profile)

    print(f"\nSQL test split, {len(examples)} examples, {profile.kind} ({profile.name}); "
          f"LoRA r={settings.r}, alpha={settings.lora_alpha}, {settings.targets}, {settings.steps} steps x batch "
          f"{settings.batch_size}, lr {settings.learning_rate}\n")
    print("| model | overall | seen | held-out template | held-out database | notes |")
    print("|---|---|---|---|---|---|")
    print(row("base SmolLM2-135M-Instruct", base, f"eval {base_seconds:.0f} s"))
    print(row("LoRA r=8, all linear", lora, f"train {log['seconds']:.0f} s, {log['tokens_per_second']:.0f} tok/s, "
                                            f"final loss {log['losses'][-1]:.3f}"))
    by_template: dict[str, list[float]] = {}
    for result, example in zip(lora.results, examples):
        by_template.setdefault(f"{example['group']}/{example['template']}", []).append(result.score)
    print("\nLoRA accuracy per template:")
    for key, scores in sorted(by_template.items()):
        print(f"  {key:<40} {sum(scores) / len(scores):6.1%}  (n={len(scores)})")
    print("\nfailure reasons:", dict(lora.reasons()))


if __name__ == "__main__":
    main()
