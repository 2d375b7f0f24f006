"""The course's own training loop, with checkpoints that resume exactly.

`train()` shows every line of a training step: lesson 02 uses it for a full
fine-tune of a few matrices, lesson 03 for its LoRA layer. It is seeded so
that a run can be reproduced, and it checkpoints the trainable weights, the
optimizer and the data position, so a run interrupted resumes where it stopped
and ends with the same losses as an uninterrupted run. A folder holding
another run's checkpoint is refused: `run_signature` covers every setting, the
adapter's settings, the base model and the data. Two checkpoints are kept, each
flushed to the disk before it replaces the last, so a kill mid-save loses at
most the steps since the previous one. It trains in the weights' own dtype, with no loss
scaling, so it refuses fp16 weights (fp16 gradients underflow and overflow
without a scaler); LoRA and QLoRA runs on a GPU go through
`course_utils.trainer.train_with_trainer` (transformers' Trainer with mixed
precision), which takes the same `TrainConfig`.

Neighbours: `course_utils.answers` (the answer-loss yardstick, generation),
`course_utils.adapters` (the cached course adapters and the comparison
budget), `course_utils.full_finetune` (lesson 02's cached full fine-tune).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .answers import answer_loss
from .cache import replace_durably
from .data import collate, training_features, trim_to_answers


OPTIMIZERS = ("adamw", "paged_adamw_8bit", "adamw_8bit", "sgd")


def _positive_int(name: str, value, usual: str, allow_none: bool = False) -> int | None:
    """`value` as an int (NumPy integers too), or a ValueError; booleans are refused (`steps=True` is a slip)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}; {usual}.")
    return int(value)


@dataclass
class TrainConfig:
    """The knobs of a training run; defaults suit LoRA on the tiny model on a CPU.

    Both the course loop (`train`) and the Trainer path
    (`course_utils.trainer.train_with_trainer`) read it.
    """

    steps: int = 60
    batch_size: int = 8
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 5
    max_grad_norm: float = 1.0
    max_length: int = 256
    seed: int = 0
    optimizer: str = "adamw"
    gradient_checkpointing: bool = False
    checkpoint_every: int | None = None  # steps between checkpoints (None: only at the end if output_dir)
    log_every: int = 10
    eval_every: int | None = None  # steps between validation answer losses (Trainer path, with eval_examples)

    def __post_init__(self) -> None:
        self.steps = _positive_int("steps", self.steps, "e.g. steps=60")
        self.batch_size = _positive_int("batch_size", self.batch_size, "e.g. batch_size=8")
        self.grad_accum = _positive_int("grad_accum", self.grad_accum, "1 means no accumulation")
        self.max_length = _positive_int("max_length", self.max_length, "the course's examples fit in 256 tokens")
        self.checkpoint_every = _positive_int("checkpoint_every", self.checkpoint_every,
                                              "e.g. checkpoint_every=25, or None", allow_none=True)
        self.eval_every = _positive_int("eval_every", self.eval_every, "e.g. eval_every=10, or None", allow_none=True)
        self.log_every = _positive_int("log_every", self.log_every, "e.g. log_every=10")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}.")
        self.seed = int(self.seed)
        for name in ("learning_rate", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}; "
                                 "LoRA usually trains with learning_rate=1e-4 to 1e-3.")
            setattr(self, name, float(value))
        if self.learning_rate == 0:
            raise ValueError("learning_rate=0 trains nothing; LoRA usually uses 1e-4 to 1e-3.")
        if (isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, numbers.Integral)
                or self.warmup_steps < 0):
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}.")
        self.warmup_steps = int(self.warmup_steps)
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}.")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(f"gradient_checkpointing must be True or False, got {self.gradient_checkpointing!r}.")


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    seconds: float = 0.0  # wall time of the steps run in this call
    tokens: int = 0  # tokens processed in this call
    resumed_from: int = 0  # step the run resumed from (0 = fresh)
    validation_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, answer loss)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)



def batch_indices(n_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Which examples form micro-batch `step`: a seeded shuffle per epoch.

    A pure function of (step, seed), so a resumed run sees exactly the batches
    the uninterrupted run would have seen.
    """
    per_epoch = n_examples // batch_size
    if per_epoch == 0:
        raise ValueError(f"{n_examples} examples cannot fill one batch of {batch_size}; lower batch_size.")
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[position * batch_size:(position + 1) * batch_size].tolist()


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("No trainable parameters: mark some with requires_grad=True (e.g. inject LoRA first).")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.learning_rate)
    if not torch.cuda.is_available():
        raise ValueError(f"{config.optimizer} needs a CUDA GPU (bitsandbytes' paged/8-bit optimizers); "
                         "use optimizer='adamw' on this machine.")
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if config.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


CHECKPOINT_FILE = "checkpoint.pt"  # the newest checkpoint of a course-loop run
PREVIOUS_CHECKPOINT_FILE = "checkpoint.previous.pt"  # the one before it: kept until the newest is on the disk
TRAINER_RUN_FILE = "course_run.json"  # what marks a folder of the Trainer path (course_utils.trainer)

# Config fields that do not change what a training step computes: names, versions, what a forward returns.
_NOT_COMPUTATION = {"_name_or_path", "_model_name_or_path", "name_or_path", "transformers_version", "_commit_hash",
                    "dtype", "torch_dtype", "use_cache", "output_attentions", "output_hidden_states", "return_dict",
                    "id2label", "label2id"}
_NOT_ADAPTER = {"peft_version", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping"}
FINGERPRINT_VALUES = 64  # values read from each frozen tensor for the base model's fingerprint


def _plain(data):
    """`data` as JSON would give it back (sets sorted, dtypes and enums as text), so saved and new compare equal."""
    def jsonable(value):
        return sorted(value, key=str) if isinstance(value, (set, frozenset)) else str(value)

    return json.loads(json.dumps(data, sort_keys=True, default=jsonable))


def weight_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the frozen weights' names, shapes, dtypes and `FINGERPRINT_VALUES` evenly spaced values of each.

    It tells two base models of the same shapes apart (another checkpoint of
    the same architecture, the bf16 copy of an fp32 model) without reading
    every weight: milliseconds for a 7B model. The values are read exactly, so
    the hash is the same on any device and any number of threads.
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if param.requires_grad:
            continue
        digest.update(f"{name} {tuple(param.shape)} {param.dtype}".encode())
        if param.device.type == "meta" or param.numel() == 0:  # offloaded by accelerate: shapes only
            continue
        flat = param.detach().reshape(-1)
        count = min(flat.numel(), FINGERPRINT_VALUES)  # integer positions: float32 cannot count to 28 million
        positions = torch.arange(count, dtype=torch.int64) * (flat.numel() - 1) // max(count - 1, 1)
        digest.update(flat[positions.to(flat.device)].to("cpu", torch.float64).numpy().tobytes())
    return digest.hexdigest()


def model_signature(model: torch.nn.Module) -> dict:
    """What the model brings to a run's signature: its base model, its adapter settings, its dtypes.

    The base: its config (without names and versions) and a fingerprint of its
    frozen weights. The adapter: a PEFT model's `LoraConfig` in full; for any
    other model (lesson 03's `LoraLinear`, a full fine-tune), the plain
    settings (numbers, flags, dropout rates) of every module that holds a
    trainable weight. Every one of these changes what training computes.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    config = {k: v for k, v in config.to_dict().items() if k not in _NOT_COMPUTATION} if config is not None else {}
    if hasattr(model, "peft_config"):
        adapter = {name: {k: v for k, v in c.to_dict().items() if k not in _NOT_ADAPTER}
                   for name, c in model.peft_config.items()}
    else:
        adapter = {}
        for name, module in model.named_modules():
            if any(p.requires_grad for p in module.parameters(recurse=False)):
                settings = {k: v for k, v in vars(module).items()
                            if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str))}
                settings |= {f"{child}.p": c.p for child, c in module.named_children() if isinstance(c, torch.nn.Dropout)}
                adapter[name or "(model)"] = {"type": type(module).__name__} | settings
    dtypes = {kind: sorted({str(p.dtype) for p in model.parameters() if p.requires_grad == trainable})
              for kind, trainable in (("trainable", True), ("frozen", False))}
    return _plain({"base_config": config, "base_weights": weight_fingerprint(model), "adapter": adapter,
                   "dtypes": dtypes})


def run_signature(model: torch.nn.Module, config: TrainConfig, examples: Sequence[dict]) -> dict:
    """What must match for a checkpoint to continue a run: settings (steps excepted), model, shapes, data."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("steps", "log_every", "eval_every")}
    shapes = {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    data = hashlib.sha256(json.dumps([(e.get("id"), e["question"], e["answer"]) for e in examples]).encode())
    return {"settings": settings, "model": model_signature(model), "trainable": shapes, "examples": len(examples),
            "data_sha256": data.hexdigest()}


def _dict_differences(what: str, saved: dict, current: dict, limit: int = 3) -> list[str]:
    """Fields two signature dicts both hold, with different values.

    A field only one side holds comes from another library version (Colab
    reinstalls after a disconnect; a newer PEFT adds a config field): it is
    not a difference of the run, so a legitimate resume is not refused for it.
    """
    keys = sorted(k for k in set(saved) & set(current) if saved[k] != current[k])
    shown = [f"{what} {k}: {saved[k]!r} in the folder, {current[k]!r} now" for k in keys[:limit]]
    return shown + ([f"{what}: {len(keys) - limit} more fields"] if len(keys) > limit else [])


def signature_differences(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two run signatures (empty: the same run).

    A folder written before a field existed differs in that field: its run
    cannot be shown to be this one.
    """
    differences = [f"{key}: {saved['settings'].get(key)!r} in the folder, {value!r} now"
                   for key, value in current["settings"].items() if saved["settings"].get(key) != value]
    for key, value in current.items():
        if key not in saved:
            differences.append(f"{key} (not recorded in the folder: it was written by an earlier version of the course)")
    model_saved, model_now = saved.get("model"), current.get("model")
    if isinstance(model_saved, dict) and isinstance(model_now, dict):
        differences += _dict_differences("base model config", model_saved.get("base_config") or {},
                                         model_now["base_config"])
        if model_saved.get("dtypes") != model_now.get("dtypes"):
            differences.append(f"weight dtypes: {model_saved.get('dtypes')} in the folder, {model_now['dtypes']} now")
        elif model_saved.get("base_weights") != model_now.get("base_weights"):
            differences.append("base model weights (same shapes and dtypes, other values: another base model)")
        adapters_saved, adapters_now = model_saved.get("adapter") or {}, model_now["adapter"]
        for name in sorted(set(adapters_saved) | set(adapters_now)):
            differences += _dict_differences(f"adapter {name!r}", adapters_saved.get(name) or {},
                                             adapters_now.get(name) or {})
    for key in sorted(set(current) - {"settings", "model", "trainable", "examples", "data_sha256"}):
        if key in saved and saved[key] != current[key]:
            differences.append(f"{key}: {saved[key]!r} in the folder, {current[key]!r} now")
    if "trainable" in saved and saved["trainable"] != current["trainable"]:
        extra = sorted(set(saved["trainable"]) ^ set(current["trainable"]))
        reshaped = sorted(n for n in set(saved["trainable"]) & set(current["trainable"])
                          if saved["trainable"][n] != current["trainable"][n])
        example = (extra[:1] or [f"{n} {saved['trainable'][n]} -> {current['trainable'][n]}" for n in reshaped[:1]])
        differences.append(f"trainable parameters ({len(extra)} names and {len(reshaped)} shapes differ, "
                           f"e.g. {example[0]})")
    if "data_sha256" in saved and (saved.get("examples"), saved["data_sha256"]) != (current["examples"],
                                                                                  current["data_sha256"]):
        differences.append(f"training data ({saved.get('examples')} examples in the folder's run, "
                           f"{current['examples']} now, or other contents)")
    return differences


class FolderRefused(ValueError):
    """A checkpoint folder that this run must not resume or write into: another run's, the other path's, or damaged.

    Raised before any weight changes. Code that owns the folder (the adapter
    cache) catches it to name its own fix.
    """


def other_run_error(folder: Path, differences: list[str]) -> FolderRefused:
    return FolderRefused(f"{folder} holds a run with other settings ({'; '.join(differences)}): "
                         "use a fresh output folder.")


def check_stop_after(stop_after) -> None:
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, numbers.Integral)
                                   or stop_after <= 0):
        raise ValueError(f"stop_after must be None (train to the end) or a positive number of steps, got {stop_after!r}.")


def refuse_trainer_folder(folder: Path) -> None:
    """The course loop does not resume a Trainer-path folder, nor writes beside its checkpoints."""
    if (folder / TRAINER_RUN_FILE).exists() or any(p.is_dir() for p in folder.glob("checkpoint-*")):
        raise FolderRefused(f"{folder} holds a run of transformers' Trainer (course_utils.trainer.train_with_trainer: "
                            f"{TRAINER_RUN_FILE} or checkpoint-N folders), which the course loop cannot resume: "
                            "resume it with train_with_trainer, or give this run a fresh output folder.")


def save_checkpoint(folder: Path, model, optimizer, scheduler, step: int, losses: list[float],
                    signature: dict, validation: list[tuple[int, float]] | None = None) -> None:
    """Trainable weights, optimizer, schedule, step, losses and the run's signature, durably.

    Written aside and flushed to the disk before it takes the name
    `checkpoint.pt`; the checkpoint it replaces becomes `checkpoint.previous.pt`.
    A kill at any moment leaves at least one complete checkpoint, as the
    Trainer path's two kept `checkpoint-N` folders do.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state = {"trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step, "losses": losses,
             "torch_rng": torch.get_rng_state(), "signature": json.dumps(signature),
             "validation": json.dumps(validation or [])}
    partial = folder / (CHECKPOINT_FILE + ".partial")
    with open(partial, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if (folder / CHECKPOINT_FILE).exists():
        replace_durably(folder / CHECKPOINT_FILE, folder / PREVIOUS_CHECKPOINT_FILE)
    replace_durably(partial, folder / CHECKPOINT_FILE)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, or an error that names the file and what to do."""
    try:
        state = torch.load(path, weights_only=True)
        if not isinstance(state, dict) or not {"trainable", "optimizer", "scheduler", "step", "signature"} <= set(state):
            raise ValueError("it does not hold the course loop's fields")
        state["signature"] = json.loads(state["signature"])
        if not isinstance(state["signature"], dict) or "settings" not in state["signature"]:
            raise ValueError("its run signature is damaged")
        if isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0:
            raise ValueError("its step is damaged")
    except Exception as exc:  # truncated, random bytes, a pickle with code in it, another program's file
        raise FolderRefused(f"{path} cannot be read as a training checkpoint ({type(exc).__name__}). It is damaged, "
                            f"or not written by course_utils.train: delete {path.parent} to start the run over.") from None
    return state


def newest_readable_checkpoint(folder: Path) -> tuple[dict | None, bool]:
    """(the newest checkpoint of `folder` that can be read, whether the newer `checkpoint.pt` was damaged).

    (None, False): the folder holds no checkpoint. A damaged `checkpoint.pt`
    with a readable `checkpoint.previous.pt` gives the previous one;
    `set_damaged_aside` then tidies up once the run is known to be this one.
    """
    newest, previous = folder / CHECKPOINT_FILE, folder / PREVIOUS_CHECKPOINT_FILE
    if newest.exists():
        try:
            return read_checkpoint(newest), False
        except ValueError:
            if not previous.exists():
                raise
            return read_checkpoint(previous), True
    return (read_checkpoint(previous), False) if previous.exists() else (None, False)


def set_damaged_aside(folder: Path, step: int) -> None:
    """Keep a damaged newest checkpoint for a look (`checkpoint.damaged.pt`) and continue from the previous one."""
    newest, previous = folder / CHECKPOINT_FILE, folder / PREVIOUS_CHECKPOINT_FILE
    if newest.exists():
        replace_durably(newest, folder / "checkpoint.damaged.pt")
        print(f"{newest} cannot be read (damaged, perhaps cut off by a crash): resuming from {previous.name}, "
              f"step {step}; the damaged file is kept as checkpoint.damaged.pt.")
    replace_durably(previous, newest)  # the checkpoint continued from takes the newest's name


def load_checkpoint(state: dict, folder: Path, model, optimizer, scheduler,
                    signature: dict) -> tuple[int, list[float], list[tuple[int, float]]]:
    """Restore a run from `state`; refuse one with other settings, or damaged, before touching any weight.

    Everything is checked first (the signature, every trainable tensor's name
    and shape, the optimizer's and the schedule's states); only then are the
    weights copied.
    """
    differences = signature_differences(state["signature"], signature)
    if differences:
        raise other_run_error(folder, differences)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saved = state["trainable"]
    if not isinstance(saved, dict) or set(saved) != set(params) or any(
            not isinstance(saved[n], torch.Tensor) or saved[n].shape != p.shape for n, p in params.items()):
        raise FolderRefused(f"{folder / CHECKPOINT_FILE} does not hold this model's trainable weights (damaged?): "
                         f"delete {folder} to start the run over.")
    try:  # load_state_dict checks the groups and sizes before it changes anything
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except Exception as exc:
        raise FolderRefused(f"{folder / CHECKPOINT_FILE}: its optimizer or schedule state does not fit this run "
                         f"({type(exc).__name__}: {exc}); delete {folder} to start the run over.") from None
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    torch.set_rng_state(state["torch_rng"])
    return state["step"], list(state["losses"]), [tuple(v) for v in json.loads(state.get("validation", "[]"))]


def undo_cpu_inference_packing(model: torch.nn.Module) -> int:
    """Give 4-bit weights their trainable layout back; returns how many layers were repacked.

    bitsandbytes (0.50, on CPUs with AVX512-BF16) repacks a Linear4bit's weight
    for fast inference on its first eval-mode forward (generation, evaluation).
    That layout has no backward: gradients silently stop at every 4-bit layer,
    so an NF4 model evaluated before training would train (almost) nothing.
    """
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    except Exception:  # no bitsandbytes, no 4-bit layers
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module.weight.quant_state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                module.weight.data, module.weight.quant_state)
            count += 1
    return count


def train(model, tokenizer, examples: Sequence[dict], config: TrainConfig, output_dir: str | Path | None = None,
          stop_after: int | None = None, eval_examples: Sequence[dict] | None = None) -> TrainResult:
    """Train the parameters of `model` that require grad on `examples`.

    With `output_dir`, a checkpoint is written every `checkpoint_every` steps
    and at the end, and a run finding a checkpoint there resumes from it.
    `stop_after` ends the call early after that many steps (to simulate a
    disconnect in tests and lessons); re-running then resumes. With
    `eval_examples` and `config.eval_every`, the answer loss on them is
    recorded at step 0, every `eval_every` steps and at the end (a validation
    curve, the same yardstick as the Trainer path's).
    """
    check_stop_after(stop_after)
    folder = Path(output_dir) if output_dir else None
    if folder:
        refuse_trainer_folder(folder)
    set_seed(config.seed)
    device = next(model.parameters()).device
    features = [training_features(tokenizer, e, config.max_length) for e in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    if any(p.dtype == torch.float16 for p in params):
        raise ValueError("This loop has no loss scaler, and fp16 weights trained without one lose small gradients "
                         "(underflow) and overflow to inf. Load the model with dtype=torch.float32 (the loop can "
                         "still run on a GPU), or train with course_utils.trainer.train_with_trainer, which uses "
                         "fp16 autocast with loss scaling on a T4.")
    undo_cpu_inference_packing(model)  # an evaluated NF4 model on the CPU would otherwise get no gradients
    signature = run_signature(model, config, examples)  # after the repacking: the stored layout is part of it
    optimizer = make_optimizer(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, config))
    state, newest_damaged = newest_readable_checkpoint(folder) if folder else (None, False)
    step, losses, validation = 0, [], []
    if state is not None:
        step, losses, validation = load_checkpoint(state, folder, model, optimizer, scheduler, signature)
        if newest_damaged:
            set_damaged_aside(folder, step)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    result = TrainResult(losses=losses, resumed_from=step, validation_losses=validation)

    def record_validation(at: int) -> None:
        if eval_examples and config.eval_every:
            validation.append((at, answer_loss(model, tokenizer, eval_examples, max_length=config.max_length)))

    if step >= config.steps:
        return result
    if step == 0:
        record_validation(0)
    model.train()
    end = config.steps if stop_after is None else min(config.steps, step + stop_after)
    start_time = time.perf_counter()
    bar = tqdm(range(step, end), initial=step, total=config.steps, desc="training", leave=False)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(config.grad_accum):
            index = batch_indices(len(features), config.batch_size, step * config.grad_accum + micro, config.seed)
            batch = {k: v.to(device) for k, v in collate([features[i] for i in index], tokenizer.pad_token_id).items()}
            loss = model(**trim_to_answers(batch)).loss / config.grad_accum  # the LM head only where labels are
            loss.backward()
            step_loss += loss.item()
            result.tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(step_loss)
        bar.set_postfix(loss=f"{step_loss:.3f}")
        done = step + 1
        if config.eval_every and (done % config.eval_every == 0 or done == config.steps):
            record_validation(done)
            model.train()
        if folder and config.checkpoint_every and done % config.checkpoint_every == 0 and done < end:
            save_checkpoint(folder, model, optimizer, scheduler, done, losses, signature, validation)
    result.seconds = time.perf_counter() - start_time
    if folder:
        save_checkpoint(folder, model, optimizer, scheduler, end, losses, signature, validation)
    model.eval()
    return result
