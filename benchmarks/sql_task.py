"""Calibrate the text-to-SQL task: base model vs LoRA adapters, by group, with noise.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/sql_task.py --steps 80     # the calibration run
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/sql_task.py                # the quick adapter (30 steps on a CPU)
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/sql_task.py --steps 30 80  # both, and their difference
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/sql_task.py --steps 30 80 --learning-rates 1e-3 3e-3
                                                      # and the 80-step run at other learning rates
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/sql_task.py --steps 30 80 --seeds 1 --answer-loss
                                                      # and each run again with seed 1; answer loss per group
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/sql_task.py --formats      # prompt formats: tokens, s/step

Prints markdown tables (paste them into data/README.md): accuracy overall and
per group with its binomial standard error, the paired difference between
models on the same questions, and the hand-written transfer check
(data/transfer/). The task should sit where later lessons can show
differences: the base model near 0%, a LoRA adapter trained a few CPU minutes
well above half overall and clearly below 100% on the held-out groups. Not a
test: it takes minutes. Trained adapters and their reports are cached in the
course cache, and so is the base model's report, keyed by the data it scored.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from dataclasses import replace

from course_utils.adapters import (TRANSFER_SPLIT, adapter_example_losses, adapter_report, base_example_losses,
                                   base_report, course_adapter_settings, read_train_log, train_lora_adapter)
from course_utils.compare import loss_difference
from course_utils.data import (GROUPS, SCHEMA_STYLES, evenly_spaced, load_examples, load_transfer_examples,
                               schema_text, training_features)
from course_utils.evaluate import EvalReport, ScoredExample
from course_utils.hardware import detect
from course_utils.models import load_model, load_tokenizer


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of b - a over the same questions, and its standard error (from the per-question differences)."""
    d = [y - x for x, y in zip(a, b)]
    return statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d))


def group_scores(report: EvalReport) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {}
    for r in report.results:
        groups.setdefault(r.group, []).append(r.score)
    return groups


def cell(scores: list[float]) -> str:
    if not scores:
        return "-"
    p = statistics.fmean(scores)
    return f"{p:.1%} ± {binomial_se(p, len(scores)):.1%}"


def table_row(name: str, report: EvalReport, transfer: EvalReport, notes: str = "") -> str:
    groups = group_scores(report)
    cells = " | ".join(cell(groups.get(g, [])) for g in GROUPS)
    return (f"| {name} | {cell([r.score for r in report.results])} | {cells} | "
            f"{cell([r.score for r in transfer.results])} | {notes} |")


def run_name(settings) -> str:
    seed = f", seed {settings.seed}" if settings.seed else ""
    return f"LoRA, {settings.steps} steps, lr {settings.learning_rate:g}{seed}"


def answer_loss_by_group(runs: list, examples: list[dict], n: int | None, profile) -> None:
    """The yardstick on the test split, per group: base model and each run, and each run's paired drop.

    Accuracy moves in whole questions and stays at 0 until an answer is exactly
    right; the answer loss shows whether a short run learned anything in a
    group where its accuracy cannot yet.
    """
    base = base_example_losses("sql", "test", n, profile)
    losses = {run_name(s): adapter_example_losses(s, "test", n, profile) for s in runs}

    rows_of = {g: [i for i, e in enumerate(examples) if e["group"] == g] for g in GROUPS}
    print("\nAnswer loss per answer token on the test split (the course's yardstick), and each run minus the base "
          "model on the same questions (± two standard errors over the questions):\n")
    print("| model | overall | " + " | ".join(GROUPS) + " |")
    print("|---|---|" + "---|" * len(GROUPS))
    print("| base | " + " | ".join(f"{v.mean:.3f}" for v in [base] + [base.subset(rows_of[g]) for g in GROUPS]) + " |")
    for name, values in losses.items():
        cells = []
        for a, b in [(base, values)] + [(base.subset(rows_of[g]), values.subset(rows_of[g])) for g in GROUPS]:
            d, se = loss_difference(a, b)
            cells.append(f"{b.mean:.3f} ({d:+.3f} ± {2 * se:.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def calibrate(steps: list[int | None], n: int | None, skip_base: bool = False,
              learning_rates: list[float] | None = None, seeds: list[int] | None = None,
              answer_loss: bool = False) -> None:
    profile = detect()
    print(profile)
    examples = evenly_spaced(load_examples("sql", "test"), n)
    transfer = load_transfer_examples()
    start = time.perf_counter()
    if skip_base:  # while iterating on the data: every answer counted wrong, nothing generated
        base = EvalReport([ScoredExample(e["id"], False, 0.0, "skipped", "", e["group"]) for e in examples])
        base_transfer = EvalReport([ScoredExample(e["id"], False, 0.0, "skipped", "", e["group"]) for e in transfer])
    else:
        base = base_report("sql", "test", n, profile)
        base_transfer = base_report("sql", TRANSFER_SPLIT, None, profile)
    base_seconds = time.perf_counter() - start

    rows = [table_row("base SmolLM2-135M-Instruct", base, base_transfer, f"eval {base_seconds:.0f} s (0 if cached)")]
    reports = {"base": base}
    runs = [course_adapter_settings(profile, **({} if count is None else {"steps": count})) for count in steps]
    longest = max(range(len(runs)), key=lambda i: runs[i].steps)
    # other learning rates at the longest of those step counts: is the course's rate the right one?
    runs += [replace(runs[longest], learning_rate=lr) for lr in learning_rates or []]
    # (the course's seed's run, the same run with another seed), for each --steps run
    seed_pairs = [(runs[i], replace(runs[i], seed=seed)) for i in range(len(steps)) for seed in seeds or []
                  if seed != runs[i].seed]
    by_seed = [other for _, other in seed_pairs]
    for settings in runs + by_seed:
        log = read_train_log(train_lora_adapter(settings, profile))
        report = adapter_report(settings, "test", n, profile)
        transfer_report = adapter_report(settings, TRANSFER_SPLIT, None, profile)
        name = run_name(settings)
        reports[name] = report
        rows.append(table_row(name, report, transfer_report,
                              f"train {log['seconds']:.0f} s ({log['seconds'] / settings.steps:.1f} s/step), "
                              f"{log['tokens_per_second']:.0f} tok/s, final loss {log['losses'][-1]:.3f}"))
        print(f"\n{name}: accuracy per template (test)")
        by_template: dict[str, list[float]] = {}
        for result, example in zip(report.results, examples):
            by_template.setdefault(f"{example['group']}/{example['template']}", []).append(result.score)
        for key, scores in sorted(by_template.items()):
            print(f"  {key:<36} {statistics.fmean(scores):6.1%}  (n={len(scores)})")
        by_db: dict[str, list[float]] = {}
        for result, example in zip(report.results, examples):
            if example["group"] == "heldout_database":
                by_db.setdefault(example["db_id"], []).append(result.score)
        print("  held-out databases:", ", ".join(f"{k} {statistics.fmean(v):.0%} (n={len(v)})"
                                                  for k, v in sorted(by_db.items())))
        print("  transfer:", ", ".join(f"{e['template']} {'ok' if r.correct else 'no'}"
                                       for r, e in zip(transfer_report.results, transfer)))
        print("  failure reasons:", dict(report.reasons()))

    course = runs[0]
    print(f"\nSQL test split, {len(examples)} examples ({', '.join(f'{g} {len(s)}' for g, s in group_scores(base).items())}"
          f"), transfer check {len(transfer)} questions; {profile.kind} ({profile.name}); LoRA r={course.r}, "
          f"alpha={course.lora_alpha}, {course.targets}, batch {course.batch_size}, the course's lr {course.learning_rate:g} "
          "unless the row names another. "
          "Cells: accuracy ± binomial standard error.\n")
    print("| model | overall | seen | held-out template | held-out database | transfer (hand-written) | notes |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))

    print("\nPaired differences on the same questions (points, ± standard error of the mean difference):\n")
    print("| comparison | overall | " + " | ".join(GROUPS) + " |")
    print("|---|---|" + "---|" * len(GROUPS))
    names = [run_name(s) for s in runs]
    by_steps, by_rate = names[:len(steps)], names[len(steps):]
    pairs = ([("base", name) for name in names + [run_name(s) for s in by_seed]] + list(zip(by_steps, by_steps[1:]))
             + [(by_steps[longest], name) for name in by_rate]  # each other rate against the course's
             + [(run_name(first), run_name(other)) for first, other in seed_pairs])  # seed against seed
    for a, b in pairs:
        ga, gb = group_scores(reports[a]), group_scores(reports[b])
        diffs = [paired_difference([r.score for r in reports[a].results], [r.score for r in reports[b].results])]
        diffs += [paired_difference(ga[g], gb[g]) for g in GROUPS]
        print(f"| {b} - {a} | " + " | ".join(f"{100 * m:+.1f} ± {100 * se:.1f}" for m, se in diffs) + " |")
    print("\nfailure reasons (base):", dict(base.reasons()))
    if answer_loss:
        answer_loss_by_group(runs + by_seed, examples, n, profile)


def measure_formats(steps: int, batch_size: int) -> None:
    """Tokens per training example for each schema format, and CPU seconds per LoRA training step.

    The steps run interleaved (format A, B, C, A, B, C, ...) on the same
    examples, so load from other processes falls on every format alike.
    """
    import torch
    from peft import get_peft_model

    from course_utils.adapters import lora_config

    profile = detect()
    tokenizer = load_tokenizer()
    train = load_examples("sql", "train")
    print(f"{profile.kind} ({profile.name}), torch threads {torch.get_num_threads()}")
    lengths: dict[str, list[int]] = {}
    for style in SCHEMA_STYLES:
        lengths[style] = [len(training_features(tokenizer, e | {"schema": schema_text(e["db_id"], style)})["input_ids"])
                          for e in train]
    rng = random.Random(0)
    batches = [rng.sample(range(len(train)), batch_size) for _ in range(steps + 1)]
    model = get_peft_model(load_model(), lora_config(course_adapter_settings(profile)))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    seconds: dict[str, list[float]] = {style: [] for style in SCHEMA_STYLES}
    padded: dict[str, list[int]] = {style: [] for style in SCHEMA_STYLES}
    for step, batch in enumerate(batches):
        for style in SCHEMA_STYLES:
            features = [training_features(tokenizer, train[i] | {"schema": schema_text(train[i]["db_id"], style)})
                        for i in batch]
            width = max(len(f["input_ids"]) for f in features)
            ids = torch.full((len(features), width), tokenizer.pad_token_id)
            labels = torch.full((len(features), width), -100)
            mask = torch.zeros((len(features), width), dtype=torch.long)
            for row, f in enumerate(features):
                ids[row, :len(f["input_ids"])] = torch.tensor(f["input_ids"])
                labels[row, :len(f["labels"])] = torch.tensor(f["labels"])
                mask[row, :len(f["input_ids"])] = 1
            start = time.perf_counter()
            optimizer.zero_grad()
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            if step:  # the first step warms up the kernels
                seconds[style].append(time.perf_counter() - start)
                padded[style].append(width)
    print(f"\n{len(train)} training examples; {steps} steps of batch {batch_size} per format (after one warm-up)\n")
    print("| schema format | tokens per example: mean | p90 | max | padded batch width (mean) | s / step (median) |")
    print("|---|---|---|---|---|---|")
    for style in SCHEMA_STYLES:
        values = sorted(lengths[style])
        print(f"| {style} | {statistics.fmean(values):.0f} | {values[int(0.9 * len(values))]} | {values[-1]} | "
              f"{statistics.fmean(padded[style]):.0f} | {statistics.median(seconds[style]):.2f} |")
    example = train[0]
    for style in SCHEMA_STYLES:
        print(f"\n{style}:\n{schema_text(example['db_id'], style)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="*", default=None,
                        help="LoRA steps of the adapters to compare (default: the course adapter's)")
    parser.add_argument("--n", type=int, default=None, help="test examples, evenly spaced (default: all)")
    parser.add_argument("--learning-rates", type=float, nargs="*", default=None,
                        help="also train the longest --steps run at these learning rates (the course's is the default)")
    parser.add_argument("--formats", action="store_true", help="measure the prompt's schema formats instead")
    parser.add_argument("--skip-base", action="store_true", help="do not score the base model (data iterations)")
    parser.add_argument("--seeds", type=int, nargs="*", default=None,
                        help="also train every --steps run with these seeds (the course's is 0)")
    parser.add_argument("--answer-loss", action="store_true",
                        help="also print the answer loss per group (base and every run) on the test split")
    parser.add_argument("--format-steps", type=int, default=8, help="training steps per format (with --formats)")
    args = parser.parse_args()
    if args.formats:
        measure_formats(args.format_steps, 8)
    else:
        calibrate(args.steps or [None], args.n, args.skip_base, args.learning_rates, args.seeds, args.answer_loss)


if __name__ == "__main__":
    main()
