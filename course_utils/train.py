"""The course's own training loop, with checkpoints that resume exactly.

`train()` shows every line of a training step: lesson 02 uses it for a full
fine-tune of a few matrices, lesson 03 for its LoRA layer. It is seeded so
that a run can be reproduced, and it checkpoints the trainable weights, the
optimizer and the data position, so a run interrupted resumes where it stopped
and ends with the same losses as an uninterrupted run; a folder holding another
run's checkpoint is refused. It trains in the weights' own dtype, with no loss
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
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .answers import answer_loss
from .data import collate, training_features, trim_to_answers


OPTIMIZERS = ("adamw", "paged_adamw_8bit", "adamw_8bit", "sgd")


def _positive_int(name: str, value, usual: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}; {usual}.")


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
        _positive_int("steps", self.steps, "e.g. steps=60")
        _positive_int("batch_size", self.batch_size, "e.g. batch_size=8")
        _positive_int("grad_accum", self.grad_accum, "1 means no accumulation")
        _positive_int("max_length", self.max_length, "the course's examples fit in 256 tokens")
        _positive_int("checkpoint_every", self.checkpoint_every, "e.g. checkpoint_every=25, or None", allow_none=True)
        _positive_int("eval_every", self.eval_every, "e.g. eval_every=10, or None", allow_none=True)
        for name in ("learning_rate", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}; "
                                 "LoRA usually trains with learning_rate=1e-4 to 1e-3.")
        if self.learning_rate == 0:
            raise ValueError("learning_rate=0 trains nothing; LoRA usually uses 1e-4 to 1e-3.")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}.")
        if self.optimizer not in OPTIMIZERS:
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


CHECKPOINT_FILE = "checkpoint.pt"


def run_signature(model: torch.nn.Module, config: TrainConfig, examples: Sequence[dict]) -> dict:
    """What must match for a checkpoint to continue a run: settings (steps excepted), shapes, data."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("steps", "log_every", "eval_every")}
    shapes = {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    data = hashlib.sha256(json.dumps([(e.get("id"), e["question"], e["answer"]) for e in examples]).encode())
    return {"settings": settings, "trainable": shapes, "examples": len(examples), "data_sha256": data.hexdigest()}


def signature_differences(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two run signatures (empty: the same run)."""
    differences = [f"{key}: {saved['settings'].get(key)!r} in the folder, {value!r} now"
                   for key, value in current["settings"].items() if saved["settings"].get(key) != value]
    if saved["trainable"] != current["trainable"]:
        extra = sorted(set(saved["trainable"]) ^ set(current["trainable"]))
        reshaped = sorted(n for n in set(saved["trainable"]) & set(current["trainable"])
                          if saved["trainable"][n] != current["trainable"][n])
        example = (extra[:1] or [f"{n} {saved['trainable'][n]} -> {current['trainable'][n]}" for n in reshaped[:1]])
        differences.append(f"trainable parameters ({len(extra)} names and {len(reshaped)} shapes differ, "
                           f"e.g. {example[0]})")
    if (saved["examples"], saved["data_sha256"]) != (current["examples"], current["data_sha256"]):
        differences.append(f"training data ({saved['examples']} examples in the folder's run, "
                           f"{current['examples']} now, or other contents)")
    return differences


def other_run_error(folder: Path, differences: list[str]) -> ValueError:
    return ValueError(f"{folder} holds a run with other settings ({'; '.join(differences)}): "
                      "use a fresh output folder.")


def save_checkpoint(folder: Path, model, optimizer, scheduler, step: int, losses: list[float],
                    signature: dict, validation: list[tuple[int, float]] | None = None) -> None:
    """Trainable weights, optimizer, schedule, step, losses and the run's signature; written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step, "losses": losses,
             "torch_rng": torch.get_rng_state(), "signature": json.dumps(signature),
             "validation": json.dumps(validation or [])}
    tmp = folder / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / CHECKPOINT_FILE)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, or an error that names the file and what to do."""
    try:
        state = torch.load(path, weights_only=True)
        if not isinstance(state, dict) or not {"trainable", "optimizer", "step", "signature"} <= set(state):
            raise ValueError("it does not hold the course loop's fields")
    except Exception as exc:  # truncated, random bytes, a pickle with code in it, another program's file
        raise ValueError(f"{path} cannot be read as a training checkpoint ({type(exc).__name__}). It is damaged, "
                         f"or not written by course_utils.train: delete {path.parent} to start the run over.") from None
    return state


def load_checkpoint(folder: Path, model, optimizer, scheduler,
                    signature: dict) -> tuple[int, list[float], list[tuple[int, float]]]:
    """Restore a run; refuse one with other settings before touching any weight."""
    state = read_checkpoint(folder / CHECKPOINT_FILE)
    differences = signature_differences(json.loads(state["signature"]), signature)
    if differences:
        raise other_run_error(folder, differences)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
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
    set_seed(config.seed)
    device = next(model.parameters()).device
    features = [training_features(tokenizer, e, config.max_length) for e in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    if any(p.dtype == torch.float16 for p in params):
        raise ValueError("This loop has no loss scaler, and fp16 weights trained without one lose small gradients "
                         "(underflow) and overflow to inf. Load the model with dtype=torch.float32 (the loop can "
                         "still run on a GPU), or train with course_utils.trainer.train_with_trainer, which uses "
                         "fp16 autocast with loss scaling on a T4.")
    signature = run_signature(model, config, examples)
    undo_cpu_inference_packing(model)  # an evaluated NF4 model on the CPU would otherwise get no gradients
    optimizer = make_optimizer(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, config))
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    folder = Path(output_dir) if output_dir else None
    step, losses, validation = 0, [], []
    if folder and (folder / CHECKPOINT_FILE).exists():
        step, losses, validation = load_checkpoint(folder, model, optimizer, scheduler, signature)
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
