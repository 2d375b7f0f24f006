"""The course's cached LoRA adapters: trained once per settings, reused by every lesson.

`AdapterSettings` names every knob of a run (task, rank, alpha, targets, steps,
batch, learning rate, seed, 4-bit base); `train_lora_adapter()` trains it
through `course_utils.trainer` unless the cache already holds it, so a second
notebook, a solution or a re-run reads it instead of training again.
`experiment_settings()` is the shared budget of every comparison (paired by
`SEEDS`), and `adapter_example_losses()` / `adapter_report()` cache what the
lessons compare: the per-question answer loss and the execution accuracy;
`base_example_losses()` / `base_report()` cache the same for the untrained base.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .answers import answer_token_losses, evaluate_model
from .cache import cache_dir, computed_once, exclusive, file_damage, fsync_tree, replace_durably, settings_key
from .data import load_examples
from .evaluate import EvalReport
from .hardware import detect, HardwareProfile
from .merge import ADAPTER_WEIGHTS as ADAPTER_FILE  # PEFT's file name; in a cache folder it marks a finished run
from .train import FolderRefused, set_seed, TrainConfig


# ---------------------------------------------------------------------------
# Cached PEFT LoRA adapters
# ---------------------------------------------------------------------------

TARGET_SETS = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qv": ["q_proj", "v_proj"],
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclass(frozen=True)
class AdapterSettings:
    """Everything that determines a trained adapter; its hash names the cache folder."""

    task: str = "sql"
    r: int = 8
    lora_alpha: int = 16
    targets: str | tuple[str, ...] = "all-linear"
    lora_dropout: float = 0.0
    use_rslora: bool = False
    steps: int = 60
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    quantization: str | None = None  # None for LoRA, "nf4" for QLoRA
    double_quant: bool = False
    model_id: str = ""  # "" = the course's tiny model

    def __post_init__(self) -> None:
        from .data.splits import TASKS

        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}.")
        if not isinstance(self.model_id, str):
            raise ValueError(f"model_id must be a model name such as 'Qwen/Qwen2.5-7B-Instruct' ('' for the course's "
                             f"tiny model), got {self.model_id!r}.")
        if isinstance(self.r, bool) or not isinstance(self.r, numbers.Integral) or self.r <= 0:
            raise ValueError(f"r must be a positive integer (the rank of B A), got {self.r!r}; try r=8.")
        if (isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, numbers.Real)
                or not math.isfinite(self.lora_alpha) or self.lora_alpha <= 0):
            raise ValueError(f"lora_alpha must be a finite positive number, got {self.lora_alpha!r}; "
                             "the course uses lora_alpha=16 with r=8.")
        if (isinstance(self.lora_dropout, bool) or not isinstance(self.lora_dropout, numbers.Real)
                or not 0.0 <= self.lora_dropout < 1.0):
            raise ValueError(f"lora_dropout is a probability in [0, 1), got {self.lora_dropout!r}.")
        if self.quantization not in (None, "int8", "fp4", "nf4"):
            raise ValueError(f"quantization must be None, 'int8', 'fp4' or 'nf4', got {self.quantization!r}.")
        config = self.train_config()  # steps, batch size, learning rate and seed are checked where they are used
        # NumPy numbers become Python ones, so equal settings name one cache folder (the key is their JSON).
        alpha = int(self.lora_alpha) if isinstance(self.lora_alpha, numbers.Integral) else float(self.lora_alpha)
        for name, value in (("r", int(self.r)), ("lora_alpha", alpha), ("lora_dropout", float(self.lora_dropout)),
                            ("steps", config.steps), ("batch_size", config.batch_size),
                            ("learning_rate", config.learning_rate), ("seed", config.seed)):
            object.__setattr__(self, name, value)
        self.target_modules()

    def target_modules(self) -> list[str]:
        """The module names LoRA goes on. Names the model lacks are refused by PEFT when the adapter is built
        ("Target modules ... not found"), which knows the model; here only the shape of the setting is checked."""
        if isinstance(self.targets, str):
            if self.targets not in TARGET_SETS:
                raise ValueError(f"Unknown target set {self.targets!r}; choose one of {sorted(TARGET_SETS)} "
                                 "or pass a tuple of module names.")
            return TARGET_SETS[self.targets]
        if (not isinstance(self.targets, (tuple, list)) or not self.targets
                or not all(isinstance(name, str) and name for name in self.targets)):
            raise ValueError(f"targets must be one of {sorted(TARGET_SETS)} or a non-empty tuple of module names "
                             f"such as ('q_proj', 'v_proj'), got {self.targets!r}.")
        return list(self.targets)

    def train_config(self, **overrides) -> TrainConfig:
        values = dict(steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                      seed=self.seed) | overrides
        return TrainConfig(**values)


def lora_config(settings: AdapterSettings):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=settings.target_modules(), use_rslora=settings.use_rslora,
                      task_type="CAUSAL_LM")


def load_base_for(settings: AdapterSettings, profile: HardwareProfile | None = None):
    from .models import TINY_MODEL_ID, load_model

    return load_model(settings.model_id or TINY_MODEL_ID, quantization=settings.quantization,
                      double_quant=settings.double_quant, profile=profile)


def adapter_dir(settings: AdapterSettings, profile: HardwareProfile | None = None) -> Path:
    """The cache folder of an adapter: named by its settings, the training data it saw and, on a GPU, the
    device and compute dtype it trained in (`HardwareProfile.result_key`)."""
    from .data import data_path

    train_file = data_path(settings.task, "train")
    key = settings_key(asdict(settings) | {"train_data": hashlib.sha256(train_file.read_bytes()).hexdigest()}
                       | (profile or detect()).result_key())
    return cache_dir("adapters") / f"{settings.task}-r{settings.r}-{key}"


VALIDATION_EXAMPLES = 16  # validation examples whose answer loss a cached adapter records while it trains
VALIDATION_POINTS = 2  # how many times per run it records it (plus once before the first step): three points
# show a curve's direction. Each costs 16 forward passes; the point before the first step of a plain LoRA run
# is the base model's, read from the cache, which cut the CI run's 12-step adapters from 85 s to 75 s on average.


def train_lora_adapter(settings: AdapterSettings, profile: HardwareProfile | None = None,
                       force: bool = False) -> Path:
    """Train (or reuse) a PEFT LoRA adapter for `settings`; return its folder.

    Training goes through transformers' Trainer (`course_utils.trainer`), with
    the precision the hardware calls for. The folder holds the adapter
    (safetensors), its config and `train_log.json` (training loss per step,
    validation answer loss at a few points, time, tokens/s). An interrupted
    training resumes from its checkpoint; a finished one is reused unless `force=True`.
    """
    profile = profile or detect()
    folder = adapter_dir(settings, profile)
    with exclusive(folder):
        if force and folder.exists():
            shutil.rmtree(folder)
        if not (folder / ADAPTER_FILE).exists():
            _train_adapter_into(folder, settings, profile)
        damage = file_damage(folder / ADAPTER_FILE)
        if damage:  # written by a course version before the atomic write below, or a failing disk
            raise ValueError(f"The cached adapter {folder / ADAPTER_FILE} {damage}: train it again with "
                             "train_lora_adapter(settings, force=True), which replaces that folder.")
    return folder


def train_adapter(settings: AdapterSettings, profile: HardwareProfile, output_dir: str | Path | None, base=None,
                  lora_changes: dict | None = None, before_training=None, make_features=None,
                  validation_curve: bool = True):
    """Train the LoRA run `settings` describes; return (the PEFT model, the trainer's `TrainResult`).

    The one training path of the course's adapters: a fresh base (or `base`),
    fp32 norms where the hardware needs them, the seed set before LoRA's A is
    drawn, the validation curve (skip it with `validation_curve=False`).
    `lora_changes` replaces `LoraConfig` fields (DoRA, PiSSA),
    `before_training(model)` edits the start (LoftQ) and `make_features` the
    labels (lesson 05 labels the prompt too), so a variant differs from the
    cached adapter in that one thing only (lesson 05, benchmarks/lora_variants.py).
    Checkpoints go to `output_dir` (None: a scratch folder, no checkpoints kept).
    """
    from peft import get_peft_model

    from .data import training_features
    from .models import TINY_MODEL_ID, load_tokenizer
    from .trainer import prepare_for_training, train_with_trainer

    tokenizer = load_tokenizer(settings.model_id or TINY_MODEL_ID)
    model = base if base is not None else load_base_for(settings, profile)
    moved = prepare_for_training(model, profile)
    set_seed(settings.seed)  # LoRA's A is drawn at random: the seed, not earlier cells, decides the start
    model = get_peft_model(model, replace(lora_config(settings), **(lora_changes or {})))
    if before_training is not None:
        before_training(model)
    examples = load_examples(settings.task, "train")
    validation = split_examples(settings.task, "validation", VALIDATION_EXAMPLES)
    config = settings.train_config(checkpoint_every=max(10, settings.steps // 4),
                                   eval_every=max(1, settings.steps // VALIDATION_POINTS))
    # LoRA's B starts at zero, so before the first step a plain run computes exactly what its base model does
    # (the same weights, nothing cast by prepare_for_training): its first curve point is the base model's
    # answer loss on the same questions, computed once per cache instead of once per run.
    starts_as_base = (validation_curve and base is None and not lora_changes and before_training is None
                      and not moved and settings.model_id in ("", TINY_MODEL_ID))
    start = base_example_losses(settings.task, "validation", VALIDATION_EXAMPLES, profile, settings.quantization,
                                settings.double_quant, whole_split_on_gpu=False).mean if starts_as_base else None
    result = train_with_trainer(model, tokenizer, examples, config, output_dir=output_dir,
                                eval_examples=validation if validation_curve else None, profile=profile,
                                make_features=make_features or training_features, eval_start=start)
    return model, result


def _train_adapter_into(folder: Path, settings: AdapterSettings, profile: HardwareProfile) -> None:
    """Train into `folder/checkpoint`, then make the result appear all at once.

    The adapter, its config and the log are written to `folder/finished.partial`
    and flushed to the disk; then each is renamed into `folder`, the adapter
    file last. A kernel killed at any moment leaves either no adapter file
    (the next call resumes from the checkpoint) or a whole one.
    """
    try:
        model, result = train_adapter(settings, profile, folder / "checkpoint")
    except FolderRefused as refused:  # the folder is the cache's, not one the learner chose
        raise FolderRefused(f"{refused} This is the course cache's folder of these settings (left by an earlier "
                            "version of the course, another base model or a damaged save): "
                            "train_lora_adapter(settings, force=True) starts this adapter over.") from None
    log = {"settings": asdict(settings), "losses": result.losses, "validation_losses": result.validation_losses,
           "seconds": result.seconds, "tokens_per_second": result.tokens_per_second,
           "resumed_from": result.resumed_from, "device": profile.kind}
    finished = folder / "finished.partial"
    shutil.rmtree(finished, ignore_errors=True)  # a killed call's half-written files
    model.save_pretrained(finished)
    (finished / "train_log.json").write_text(json.dumps(log, indent=1))
    fsync_tree(finished)  # every file, then the folder, before any of them is renamed in
    for path in sorted(finished.iterdir(), key=lambda p: p.name == ADAPTER_FILE):
        replace_durably(path, folder / path.name)
    finished.rmdir()
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)


def read_train_log(folder: Path) -> dict:
    return json.loads((Path(folder) / "train_log.json").read_text())


def course_adapter_settings(profile: HardwareProfile | None = None, task: str = "sql", **changes) -> AdapterSettings:
    """The course's standard adapter: LoRA r=8, alpha=16 on all linear layers.

    Lessons 04, 05, 09, 10 and 11 ask for it by these settings, so it is trained
    once and then read from the cache. `changes` vary one knob (a rank sweep).
    The learning rate follows the step budget: a CPU's short runs (12 to 80
    steps) take 2e-3, which data/README.md's calibration measured against 1e-3
    and 3e-3 at 80 steps; a GPU's 300 steps take 1e-3 (not measured on a GPU).
    """
    profile = profile or detect()
    base = AdapterSettings(task=task, r=8, lora_alpha=16, targets="all-linear",
                           steps=profile.pick(cpu=30, gpu=300), batch_size=8,
                           learning_rate=profile.pick(cpu=2e-3, gpu=1e-3), seed=0)
    return replace(base, **changes)


SEEDS = (0, 1)  # every comparison trains each choice with these seeds (the same ones for every choice)
YARDSTICK_EXAMPLES = 48  # validation questions in a comparison's answer loss (on a GPU: the whole split)


def experiment_settings(profile: HardwareProfile | None = None, task: str = "sql", **changes) -> AdapterSettings:
    """The budget every comparison of the course trains with: rank, targets, QLoRA vs LoRA, learning rate...

    The standard adapter's settings with a short CPU run (12 steps of 4
    examples; on a GPU the full standard budget). Lessons 04, 05, 09 and 11 ask for
    the same settings, so each adapter is trained once and read from the cache.
    """
    profile = profile or detect()
    return course_adapter_settings(profile, task, **(profile.pick(cpu=dict(steps=12, batch_size=4), gpu={}) | changes))


def adapter_example_losses(settings: AdapterSettings, split: str = "validation", n: int | None = YARDSTICK_EXAMPLES,
                           profile: HardwareProfile | None = None, model=None):
    """The yardstick of a cached adapter, per question: `ExampleLosses` on `n` evenly spaced examples; cached.

    Compare two adapters with `course_utils.compare.compare_runs`, which
    estimates the noise from these per-question values and from the seeds.
    """
    from .compare import cached_example_losses
    from .models import TINY_MODEL_ID, load_tokenizer

    profile = profile or detect()
    n = profile.pick(cpu=n, gpu=None)
    folder = train_lora_adapter(settings, profile)

    def score():
        examples = split_examples(settings.task, split, n)
        scored = model if model is not None else load_adapted_model(settings, profile)
        return answer_token_losses(scored, load_tokenizer(settings.model_id or TINY_MODEL_ID), examples)

    return cached_example_losses(folder / f"losses-{split}-{n or 'all'}.json", score)


def seed_runs(name: str, profile: HardwareProfile | None = None, seeds: Sequence[int] = SEEDS, **change) -> list:
    """One arm of a comparison: the yardstick of `experiment_settings(profile, seed=seed, **change)` per seed.

    Each adapter comes from the cache or is trained (on a CPU a minute or two
    per seed); each result is printed as it arrives, so a long comparison shows
    its progress run by run. Returns one `ExampleLosses` per seed in `seeds`,
    ready for `course_utils.compare.compare_runs`. Pass part of `SEEDS` to give
    each training its own cell where one arm would keep a CPU learner waiting
    too long (lesson 09's QLoRA arm).
    """
    unknown = [seed for seed in seeds if seed not in SEEDS]
    if unknown or not seeds:
        raise ValueError(f"seeds must be a non-empty part of SEEDS = {list(SEEDS)}, got {list(seeds)}: the course's "
                         "comparisons pair runs by these seeds (compare_runs).")
    runs = []
    for seed in seeds:
        runs.append(adapter_example_losses(experiment_settings(profile, seed=seed, **change), profile=profile))
        print(f"{name}, seed {seed}: answer loss {runs[-1].mean:.4f}", flush=True)
    return runs


TRANSFER_SPLIT = "transfer"  # the hand-written transfer check (data/transfer/), scored like a split


def split_examples(task: str, split: str, n: int | None = None) -> list[dict]:
    """`n` evenly spaced examples of `split` (None: all); split "transfer" is the hand-written SQL check."""
    from .data import evenly_spaced, load_transfer_examples

    if split == TRANSFER_SPLIT:
        if task != "sql":
            raise ValueError(f"the transfer check is SQL only; task={task!r} has the splits train, validation, test.")
        return evenly_spaced(load_transfer_examples(), n)
    return evenly_spaced(load_examples(task, split), n)


def base_report(task: str = "sql", split: str = "test", n: int | None = None,
                profile: HardwareProfile | None = None) -> EvalReport:
    """The untrained base model scored on `n` evenly spaced examples of `split`; cached by their content.

    "Before training" is the same generation in every lesson and solution that
    shows it, and on a CPU it costs minutes; it runs once per cache.
    """
    from .evaluate import ScoredExample
    from .models import TINY_MODEL_ID, load_model, load_tokenizer

    profile = profile or detect()
    examples = split_examples(task, split, n)
    key = settings_key({"examples": examples, "model": TINY_MODEL_ID, "device": profile.kind} | profile.result_key())
    rows = computed_once(cache_dir("base") / f"report-{task}-{split}-{n or 'all'}-{key}.json", lambda: [
        asdict(r) for r in evaluate_model(load_model(profile=profile), load_tokenizer(), examples).results])
    return EvalReport([ScoredExample(**row) for row in rows])


def base_example_losses(task: str = "sql", split: str = "validation", n: int | None = YARDSTICK_EXAMPLES,
                        profile: HardwareProfile | None = None, quantization: str | None = None,
                        double_quant: bool = False, whole_split_on_gpu: bool = True):
    """The untrained base model's yardstick per question (`ExampleLosses`), its weights stored as
    `quantization` says (None, "int8", "fp4", "nf4"); cached by the questions' content.

    Every comparison with "no training" (lessons 04 and 09, their solutions)
    reads this one computation, and so does the first point of every plain LoRA
    run's validation curve (`train_adapter`; `whole_split_on_gpu=False` keeps `n`
    on a GPU too).
    """
    from .compare import cached_example_losses
    from .models import TINY_MODEL_ID, load_tokenizer
    from .qlora import load_format

    profile = profile or detect()
    n = profile.pick(cpu=n, gpu=None if whole_split_on_gpu else n)
    examples = split_examples(task, split, n)
    key = settings_key({"examples": examples, "model": TINY_MODEL_ID, "device": profile.kind,
                        "quantization": quantization, "double_quant": double_quant} | profile.result_key())
    return cached_example_losses(cache_dir("base") / f"losses-{task}-{split}-{n or 'all'}-{key}.json", lambda:
                                 answer_token_losses(load_format(quantization, double_quant, profile),
                                                     load_tokenizer(), examples))


def load_adapted_model(settings: AdapterSettings, profile: HardwareProfile | None = None, base=None):
    """The base model with the (cached, trained on demand) adapter for `settings` loaded."""
    from peft import PeftModel

    folder = train_lora_adapter(settings, profile)
    base = base if base is not None else load_base_for(settings, profile)
    return PeftModel.from_pretrained(base, folder).eval()


def adapter_report(settings: AdapterSettings, split: str = "test", n: int | None = None,
                   profile: HardwareProfile | None = None, model=None, tokenizer=None) -> EvalReport:
    """Score the adapter for `settings` on `n` evenly spaced examples of `split` (or "transfer"); cached.

    Generation is the slow part of evaluation on a CPU, so the scored report
    is stored next to the adapter and reused by later notebooks and re-runs.
    """
    from .evaluate import ScoredExample
    from .models import TINY_MODEL_ID, load_tokenizer

    folder = train_lora_adapter(settings, profile)
    examples = split_examples(settings.task, split, n)

    def score():
        scored = model if model is not None else load_adapted_model(settings, profile)
        report = evaluate_model(scored, tokenizer or load_tokenizer(settings.model_id or TINY_MODEL_ID), examples)
        return [asdict(r) for r in report.results]

    # The generated splits are fixed by the training data (part of the adapter's key); the hand-written
    # transfer questions can change on their own, so their report is keyed by their content.
    name = f"{split}-{n or 'all'}" + (f"-{settings_key({'examples': examples})}" if split == TRANSFER_SPLIT else "")
    rows = computed_once(folder / f"report-{name}.json", score)
    return EvalReport([ScoredExample(**row) for row in rows])
