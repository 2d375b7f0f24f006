"""Fine-tuning with `transformers.Trainer`: the path of the capstone and of the course's cached adapters.

The course's own loop (`course_utils.train.train`) shows every line of a training
step; here the same job goes to `transformers.Trainer`, the tool learners meet at
work, configured by the same `TrainConfig`. What this module adds is what a long
run on a rented GPU needs, and nothing else:

- mixed precision chosen by the hardware: fp16 autocast with loss scaling on a
  T4 (no native bf16), bf16 autocast on Ampere and newer, plain fp32 on a CPU;
- on fp16 devices the embeddings, norms and output head are kept in fp32
  (`prepare_for_training`), so the residual stream that runs through them never
  has to fit fp16's range (max 65,504); docs/measurements.md gives the cost;
- checkpoints every `checkpoint_every` steps (adapter, optimizer, scheduler,
  loss scaler, CPU and CUDA RNG, data position), flushed to disk (fsync) before
  the older of the two kept checkpoints is deleted;
- a resume that refuses a folder holding another run (any setting, adapter
  setting, base model or precision that changes the computation; a course-loop
  folder), before any weight is touched, and that skips a checkpoint a
  disconnect cut off mid-save for the newest complete one;
- a stop, before the update and before any checkpoint, when the loss is not finite;
- the validation answer loss every `eval_every` steps, for validation curves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .answers import answer_loss
from .cache import file_damage, fsync_tree, replace_durably, write_text_atomic
from .data import collate, training_features, trim_to_answers
from .hardware import HardwareProfile, detect
from .train import (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, TRAINER_RUN_FILE, FolderRefused, TrainConfig,
                    TrainResult, check_stop_after, other_run_error, run_signature, signature_differences,
                    undo_cpu_inference_packing)

RUN_FILE = TRAINER_RUN_FILE  # the settings a checkpoint folder belongs to
# What Trainer saves for a PEFT model / a plain one (safetensors, the old pickle format, or shards with an index).
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
KEEP_CHECKPOINTS = 2
TRAINER_OPTIMIZERS = {"adamw": "adamw_torch", "paged_adamw_8bit": "paged_adamw_8bit",
                      "adamw_8bit": "adamw_bnb_8bit", "sgd": "sgd"}


class NonFiniteLossError(RuntimeError):
    """The loss became inf or NaN: training stopped before that step changed a weight."""


def mixed_precision(profile: HardwareProfile) -> str:
    """ "fp16" (T4: autocast + loss scaling), "bf16" (Ampere+) or "no" (CPU and MPS: fp32)."""
    if not profile.is_gpu:
        return "no"
    return "bf16" if profile.compute_dtype == torch.bfloat16 else "fp16"


def prepare_for_training(model: torch.nn.Module, profile: HardwareProfile) -> int:
    """Keep what carries the residual stream in fp32 where the compute dtype is fp16; returns how many tensors moved.

    Under fp16 autocast every matmul runs in fp16, but a sum keeps its widest
    input's dtype: with fp32 embeddings the residual stream (embedding plus every
    layer's output) stays fp32, and the norms read it in fp32. With fp16
    embeddings it would be fp16 end to end, and models known for large
    activations (the Qwen2 family) overflow to inf. This is what PEFT's
    `prepare_model_for_kbit_training` does to a 4-bit model (every non-4-bit
    floating tensor to fp32); on bf16 (fp32's range) and fp32 devices nothing
    changes, which saves memory there. Call it before `get_peft_model`.
    """
    if mixed_precision(profile) != "fp16":
        return 0
    moved = 0
    for param in model.parameters():
        if param.dtype in (torch.float16, torch.bfloat16) and type(param).__name__ not in ("Params4bit", "Int8Params"):
            param.data = param.data.float()
            moved += 1
    return moved


def planned_dtypes(profile: HardwareProfile) -> dict:
    """What `prepare_for_training` leaves in fp32 on `profile`, as `plan_memory` keywords, so plans price it."""
    if mixed_precision(profile) != "fp16":
        return {}
    return {"weight_dtype": torch.float32, "unquantized_dtype": torch.float32}


def check_same_run(folder: Path, signature: dict) -> None:
    """Refuse a folder whose checkpoints belong to another run, before anything is loaded."""
    if (folder / CHECKPOINT_FILE).exists() or (folder / PREVIOUS_CHECKPOINT_FILE).exists():
        raise FolderRefused(f"{folder} holds a run of the course loop ({CHECKPOINT_FILE}, from "
                            "course_utils.train.train), which transformers' Trainer cannot resume: resume it with "
                            "course_utils.train.train, or give this run a fresh output folder.")
    path = folder / RUN_FILE
    if not path.exists():
        if checkpoints_in(folder):
            raise FolderRefused(f"{folder} holds checkpoints but no {RUN_FILE}, so its settings are unknown: "
                                "use a fresh output folder (or delete this one to start over).")
        return
    try:
        saved = json.loads(path.read_text())
        differences = signature_differences(saved, signature)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise FolderRefused(f"{path} is damaged ({type(exc).__name__}): delete {folder} to start the run over.") from None
    if differences:
        raise other_run_error(folder, differences)


def checkpoints_in(folder: Path) -> list[Path]:
    """checkpoint-N folders, oldest first."""
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def checkpoint_problem(checkpoint: Path, needs_scaler: bool = False) -> str | None:
    """Why a checkpoint-N folder cannot be resumed from (None: every file is there and whole).

    transformers writes a checkpoint in place: the weights, optimizer.pt,
    scheduler.pt, (scaler.pt with fp16), rng_state.pth, and trainer_state.json
    last. A save cut off by a disconnect leaves some of them missing or short;
    loading such a folder would change the weights and then fail.
    """
    state_file = checkpoint / "trainer_state.json"
    if not state_file.is_file():
        return "trainer_state.json is missing (it is written last: the save was cut off)"
    try:
        step = json.loads(state_file.read_text())["global_step"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return "trainer_state.json is damaged"
    if str(step) != checkpoint.name.split("-")[-1]:
        return f"trainer_state.json is for step {step}"
    weights = [checkpoint / name for name in WEIGHT_FILES if (checkpoint / name).is_file()]
    for index in (checkpoint / name for name in WEIGHT_INDEXES):
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
                return f"{index.name} is damaged"
            weights += [checkpoint / shard for shard in shards]
    if not weights:
        return f"it holds no weights ({', '.join(WEIGHT_FILES + WEIGHT_INDEXES)})"
    if any(path.name.startswith("adapter_model") for path in weights):
        try:
            json.loads((checkpoint / "adapter_config.json").read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return "adapter_config.json is missing or damaged"
    states = ["optimizer.pt", "scheduler.pt", "rng_state.pth"] + (["scaler.pt"] if needs_scaler else [])
    for path in weights + [checkpoint / name for name in states]:
        damage = file_damage(path)
        if damage:
            return f"{path.name} {damage}"
    return None


def newest_complete_checkpoint(folder: Path, needs_scaler: bool = False) -> Path | None:
    """The newest checkpoint-N folder that is complete; newer incomplete ones are moved aside, and a line says so.

    A damaged folder keeps its files under the name incomplete-checkpoint-N (it
    no longer looks like a checkpoint to the Trainer or to this function). When
    no checkpoint is complete, the error names each one's problem and the fix.
    """
    found = checkpoints_in(folder)
    problems = {}
    for checkpoint in reversed(found):
        problem = checkpoint_problem(checkpoint, needs_scaler)
        if problem is None:
            for skipped, why in problems.items():
                aside = folder / f"incomplete-{skipped.name}"
                suffix = 1
                while aside.exists():
                    aside, suffix = folder / f"incomplete-{skipped.name}.{suffix}", suffix + 1
                replace_durably(skipped, aside)
                print(f"{skipped.name} is incomplete ({why}): resuming from {checkpoint.name}; "
                      f"the incomplete folder is kept as {aside.name}.")
            return checkpoint
        problems[checkpoint] = problem
    if problems:
        raise FolderRefused(f"{folder} holds no complete checkpoint ("
                            + "; ".join(f"{c.name}: {why}" for c, why in problems.items())
                            + f"): delete {folder} to start the run over.")
    return None


class LengthBucketSampler(torch.utils.data.Sampler):
    """Shuffled batches of examples of similar length: less padding, the same batches on resume.

    Random batches of the SQL task pad about a quarter of their token
    positions; each group of 16 consecutive batches (of a seeded shuffle) is
    sorted by length before it is cut into batches, and the batches are then
    shuffled. A pure function of (seed, epoch), so a resumed run skips exactly
    the batches the interrupted one saw. Incomplete batches are dropped.
    """

    GROUP = 16  # batches sorted together

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size * self.GROUP
        batches = []
        for start in range(0, len(order), size):
            group = sorted(order[start:start + size], key=lambda i: self.lengths[i])
            batches += [group[i:i + self.batch_size] for i in range(0, len(group) - self.batch_size + 1, self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def __iter__(self):
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size * self.batch_size


def _trainer_classes():
    """Built lazily: importing transformers' Trainer takes seconds."""
    from transformers import Trainer, TrainerCallback

    class CourseTrainer(Trainer):
        """Trainer + a finite-loss check + checkpoints flushed to disk before the old one goes."""

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return LengthBucketSampler([len(f["input_ids"]) for f in dataset], self.args.train_batch_size,
                                       self.args.seed)

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if not torch.isfinite(loss):
                last = checkpoints_in(Path(self.args.output_dir))
                raise NonFiniteLossError(
                    f"The training loss became {loss.item()} in step {self.state.global_step + 1}; training stopped "
                    "before that step's update, and no checkpoint holds it (the last one: "
                    f"{last[-1].name if last else 'none'}). Usual causes: fp16 overflow (keep embeddings and norms "
                    "in fp32 with prepare_for_training, or use bf16 where the GPU has it), a learning rate too high, "
                    "or an example with no answer tokens.")
            return loss

        def _save_checkpoint(self, model, trial):
            limit, self.args.save_total_limit = self.args.save_total_limit, None  # rotate below, after fsync
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.save_total_limit = limit
            run_dir = Path(self.args.output_dir)
            saved = checkpoints_in(run_dir)
            fsync_tree(saved[-1])
            for old in saved[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old)

    class ProgressBar(TrainerCallback):
        """One tqdm.auto bar with the latest loss, instead of a printed line per logged step."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", leave=False)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    class StopAfter(TrainerCallback):
        """End the call after `steps` more steps: a simulated disconnect (lessons and tests)."""

        def __init__(self, steps: int):
            self.steps, self.start = steps, None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step - self.start >= self.steps:
                control.should_training_stop = True

    class ValidationLoss(TrainerCallback):
        """The answer loss on held-out examples every `every` steps, kept in the run's log history."""

        def __init__(self, tokenizer, examples, every: int, max_length: int, start: float | None = None):
            self.tokenizer, self.examples, self.every, self.max_length = tokenizer, examples, every, max_length
            self.start = start

        def record(self, state, model, value: float | None = None):
            if value is None:
                value = answer_loss(model, self.tokenizer, self.examples, max_length=self.max_length)
            state.log_history.append({"step": state.global_step, "validation_answer_loss": value})

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:  # the starting point of the curve: the model before any update
                self.record(state, model, self.start)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % self.every == 0 or state.global_step == state.max_steps:
                self.record(state, model)

    return CourseTrainer, ProgressBar, StopAfter, ValidationLoss


def losses_from_history(history: list[dict]) -> tuple[list[float], list[tuple[int, float]]]:
    """Training loss per optimizer step, and (step, validation answer loss) pairs, from a log history."""
    train = {row["step"]: row["loss"] for row in history if "loss" in row}
    validation = {row["step"]: row["validation_answer_loss"] for row in history if "validation_answer_loss" in row}
    return [train[s] for s in sorted(train)], sorted(validation.items())


def _checkpointing_args(enabled: bool) -> dict:
    """Gradient (activation) checkpointing arguments under the name this transformers version uses."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    prefix = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {prefix: enabled, f"{prefix}_kwargs": {"use_reentrant": False} if enabled else None}


def build_trainer(model, features: Sequence[dict], config: TrainConfig, pad_id: int, output_dir: str | os.PathLike,
                  profile: HardwareProfile, checkpoints: bool = True):
    """A `CourseTrainer` over ready-made features ({"input_ids", "labels"} lists) for `config`.

    `train_with_trainer` uses it with tokenized examples; the GPU benchmark with
    random tokens, so that both measure the same training path.
    """
    from transformers import TrainingArguments
    from transformers.trainer_callback import ProgressCallback

    CourseTrainer, ProgressBar, _, _ = _trainer_classes()
    precision = mixed_precision(profile)
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_steps, max_grad_norm=config.max_grad_norm,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
        optim=TRAINER_OPTIMIZERS[config.optimizer], fp16=precision == "fp16", bf16=precision == "bf16",
        save_strategy="steps" if checkpoints and config.checkpoint_every else "no",
        save_steps=config.checkpoint_every or config.steps, save_total_limit=KEEP_CHECKPOINTS,
        logging_steps=1, report_to="none", seed=config.seed, data_seed=config.seed, dataloader_drop_last=True,
        remove_unused_columns=False, include_num_input_tokens_seen="non_padding", use_cpu=not profile.is_gpu,
        disable_tqdm=False, **_checkpointing_args(config.gradient_checkpointing),
    )
    trainer = CourseTrainer(model=model, args=args, train_dataset=list(features),
                            data_collator=lambda batch: trim_to_answers(collate(batch, pad_id)))
    trainer.remove_callback(ProgressCallback)
    for callback in list(trainer.callback_handler.callbacks):
        if type(callback).__name__ == "NotebookProgressCallback":
            trainer.remove_callback(callback)
    trainer.add_callback(ProgressBar())
    return trainer


def train_with_trainer(model, tokenizer, examples: Sequence[dict], config: TrainConfig,
                       output_dir: str | os.PathLike | None = None, eval_examples: Sequence[dict] | None = None,
                       stop_after: int | None = None, profile: HardwareProfile | None = None,
                       make_features=training_features, eval_start: float | None = None) -> TrainResult:
    """Train the parameters of `model` that require grad, with transformers' Trainer.

    The same contract as `course_utils.train.train`: with `output_dir`, a run that
    finds its own checkpoint there resumes from it (a finished run returns at
    once, its adapter loaded), and one that finds another run's checkpoint
    stops with an error before touching anything. `eval_examples` and
    `config.eval_every` record the validation answer loss for a validation curve.
    `make_features(tokenizer, example, max_length)` turns an example into input
    ids and labels (default: the prompt masked); lesson 05 trains one variant
    that labels the prompt too. `eval_start`: the validation answer loss before the first
    step, when the caller already knows it (a LoRA run starts as its base model,
    whose value `course_utils.adapters` caches), so it is not computed again.
    """
    profile = profile or detect()
    check_stop_after(stop_after)
    _, _, StopAfter, ValidationLoss = _trainer_classes()
    features = [make_features(tokenizer, e, config.max_length) for e in examples]
    if len(features) < config.batch_size:
        raise ValueError(f"{len(features)} examples cannot fill one batch of {config.batch_size}; lower batch_size.")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("No trainable parameters: mark some with requires_grad=True (e.g. inject LoRA first).")
    if config.optimizer in ("paged_adamw_8bit", "adamw_8bit") and not profile.is_gpu:
        raise ValueError(f"{config.optimizer} needs a CUDA GPU (bitsandbytes' paged/8-bit optimizers); "
                         "use optimizer='adamw' on this machine.")
    undo_cpu_inference_packing(model)  # an evaluated NF4 model on the CPU would otherwise get no gradients
    folder = Path(output_dir) if output_dir is not None else None
    resume_from = None
    if folder is not None:
        signature = run_signature(model, config, examples) | {"precision": mixed_precision(profile)}
        if make_features is not training_features:  # other labels on the same examples: another run
            signature["data_sha256"] = hashlib.sha256(json.dumps(features).encode()).hexdigest()
        if folder.exists():
            check_same_run(folder, signature)
            resume_from = newest_complete_checkpoint(folder, needs_scaler=signature["precision"] == "fp16")
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / RUN_FILE, json.dumps(signature, indent=1))
    scratch = None if folder is not None else tempfile.mkdtemp(prefix="course-train-")
    trainer = build_trainer(model, features, config, tokenizer.pad_token_id, folder or scratch, profile,
                            checkpoints=folder is not None)
    if stop_after is not None:
        trainer.add_callback(StopAfter(stop_after))
    if eval_examples and config.eval_every:
        trainer.add_callback(ValidationLoss(tokenizer, list(eval_examples), config.eval_every, config.max_length,
                                            eval_start))
    resumed_from = int(resume_from.name.split("-")[-1]) if resume_from else 0
    tokens_before = json.loads((resume_from / "trainer_state.json").read_text()).get(
        "num_input_tokens_seen", 0) if resume_from else 0
    if resume_from and resumed_from >= config.steps:
        # Finished already: load the last checkpoint and return its log. (Trainer.train would run one
        # step past max_steps when the run ended inside an epoch, and write a checkpoint for it.)
        trainer._load_from_checkpoint(str(resume_from))
        history = json.loads((resume_from / "trainer_state.json").read_text())["log_history"]
        losses, validation = losses_from_history(history)
        model.eval()
        return TrainResult(losses=losses[:config.steps], seconds=0.0, tokens=0, resumed_from=resumed_from,
                           validation_losses=validation)
    start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - start
    model.eval()
    losses, validation = losses_from_history(trainer.state.log_history)
    ran = trainer.state.global_step > resumed_from
    return TrainResult(losses=losses, seconds=seconds if ran else 0.0,
                       tokens=int(trainer.state.num_input_tokens_seen - tokens_before) if ran else 0,
                       resumed_from=resumed_from, validation_losses=validation)
