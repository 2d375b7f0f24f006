"""A small, readable training loop with checkpoints, the answer-loss yardstick, and batched generation.

The course's own loop, `train()`, shows every line of a training step: lesson 02
uses it for a full fine-tune of a few matrices. It is seeded so that a run can
be reproduced, and it checkpoints the trainable weights, the optimizer and the
data position, so a run interrupted resumes where it stopped and ends with the
same losses as an uninterrupted run. It trains in the weights' own dtype, with
no loss scaling, so it refuses fp16 weights (fp16 gradients underflow and
overflow without a scaler); LoRA and QLoRA runs on a GPU go through
`course_utils.trainer.train_with_trainer` (transformers' Trainer with mixed
precision), which takes the same `TrainConfig`.

`answer_loss()` is the course's yardstick: the cross-entropy of the answer
tokens of held-out examples, the prompt masked exactly as in training.

`train_lora_adapter()` trains a PEFT LoRA adapter for a task and caches it by
its settings, so a second notebook or a re-run reuses it instead of training
again.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .cache import cache_dir, exclusive, settings_key, write_text_atomic
from .data import load_examples, prompt_text, training_features
from .evaluate import EvalReport, score_task
from .hardware import HardwareProfile, detect

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


def collate(features: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of training features into tensors."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), -100, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        ids[row, :n] = torch.tensor(f["input_ids"])
        labels[row, :n] = torch.tensor(f["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


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
            loss = model(**batch).loss / config.grad_accum
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


@torch.no_grad()
def answer_token_losses(model, tokenizer, examples: Sequence[dict], batch_size: int = 8,
                        max_length: int = 256) -> tuple[list[float], list[int]]:
    """Per example: the summed cross-entropy of its answer tokens, and how many there are.

    The prompt is masked exactly as in training (`training_features`); the EOS
    counts as an answer token. Per-example values let a comparison of two
    models on the same examples estimate its own noise (`course_utils.compare`).
    """
    if not examples:
        raise ValueError("answer_loss needs at least one example.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: list[float] = []
    counts: list[int] = []
    features = [training_features(tokenizer, e, max_length) for e in examples]
    for start in range(0, len(features), batch_size):
        batch = {k: v.to(device) for k, v in collate(features[start:start + batch_size], tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                   ignore_index=-100, reduction="none").view(labels.shape)
        sums += losses.sum(dim=1).tolist()
        counts += (labels != -100).sum(dim=1).tolist()
    model.train(was_training)
    return sums, counts


def answer_loss(model, tokenizer, examples: Sequence[dict], batch_size: int = 8, max_length: int = 256) -> float:
    """Mean cross-entropy per answer token on `examples`: the course's main yardstick.

    The prompt is masked exactly as in training (`training_features`), and the
    mean is over answer tokens (the EOS included), not over batches, so the
    value does not depend on the batch size. Forward passes only: on a CPU it
    costs a fraction of generating and scoring the same examples, and it moves
    smoothly where execution accuracy jumps between 0 and 1 per question.
    """
    sums, counts = answer_token_losses(model, tokenizer, examples, batch_size, max_length)
    return sum(sums) / sum(counts)


def generation_batch_size(device: torch.device) -> int:
    """Examples generated at once: 64 on a CPU, 16 on a GPU.

    On a CPU each new token reads every weight from memory once for the whole
    batch, so a decoding step costs about the same for 4 examples or 64:
    large batches are nearly free there. On a GPU 16 keeps the KV cache of a
    7B model small.
    """
    return 16 if device.type == "cuda" else 64


@torch.no_grad()
def generate_answers(model, tokenizer, examples: Sequence[dict], max_new_tokens: int = 64,
                     batch_size: int | None = None, progress: bool = True) -> list[str]:
    """Greedy answers for a list of examples, in batches (left padding)."""
    device = next(model.parameters()).device
    batch_size = batch_size or generation_batch_size(device)
    tokenizer.padding_side = "left"
    answers: list[str] = []
    was_training = model.training
    model.eval()
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="generating", leave=False, disable=not progress):
        prompts = [prompt_text(tokenizer, e) for e in examples[start:start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        answers += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    model.train(was_training)
    return answers


def evaluate_model(model, tokenizer, examples: Sequence[dict], batch_size: int | None = None,
                   max_new_tokens: int = 64) -> EvalReport:
    """Generate answers and score them with the task's exact metric."""
    return score_task(generate_answers(model, tokenizer, examples, max_new_tokens, batch_size), examples)


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
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r must be a positive integer (the rank of B A), got {self.r!r}; try r=8.")
        if (isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float))
                or not math.isfinite(self.lora_alpha) or self.lora_alpha <= 0):
            raise ValueError(f"lora_alpha must be a finite positive number, got {self.lora_alpha!r}; "
                             "the course uses lora_alpha=16 with r=8.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout is a probability in [0, 1), got {self.lora_dropout!r}.")
        if self.quantization not in (None, "int8", "fp4", "nf4"):
            raise ValueError(f"quantization must be None, 'int8', 'fp4' or 'nf4', got {self.quantization!r}.")
        self.train_config()  # steps, batch size, learning rate and seed are checked where they are used
        self.target_modules()

    def target_modules(self) -> list[str]:
        if isinstance(self.targets, str):
            if self.targets not in TARGET_SETS:
                raise ValueError(f"Unknown target set {self.targets!r}; choose one of {sorted(TARGET_SETS)} "
                                 "or pass a tuple of module names.")
            return TARGET_SETS[self.targets]
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


def adapter_dir(settings: AdapterSettings) -> Path:
    """The cache folder of an adapter: named by its settings and the training data it saw."""
    from .data import data_path

    train_file = data_path(settings.task, "train")
    key = settings_key(asdict(settings) | {"train_data": hashlib.sha256(train_file.read_bytes()).hexdigest()})
    return cache_dir("adapters") / f"{settings.task}-r{settings.r}-{key}"


VALIDATION_EXAMPLES = 24  # validation examples whose answer loss a cached adapter records while it trains
VALIDATION_POINTS = 4  # how many times per run it records it (plus once before the first step)


def train_lora_adapter(settings: AdapterSettings, profile: HardwareProfile | None = None,
                       force: bool = False) -> Path:
    """Train (or reuse) a PEFT LoRA adapter for `settings`; return its folder.

    Training goes through transformers' Trainer (`course_utils.trainer`), with
    the precision the hardware calls for. The folder holds the adapter
    (safetensors), its config and `train_log.json` (training loss per step,
    validation answer loss at a few points, time, tokens/s). An interrupted
    training resumes from its checkpoint; a finished one is reused unless `force=True`.
    """
    folder = adapter_dir(settings)
    with exclusive(folder):
        if force and folder.exists():
            shutil.rmtree(folder)
        if not (folder / "adapter_model.safetensors").exists():
            _train_adapter_into(folder, settings, profile or detect())
    return folder


def _train_adapter_into(folder: Path, settings: AdapterSettings, profile: HardwareProfile) -> None:
    from peft import get_peft_model

    from .data import evenly_spaced
    from .models import TINY_MODEL_ID, load_tokenizer
    from .trainer import prepare_for_training, train_with_trainer

    tokenizer = load_tokenizer(settings.model_id or TINY_MODEL_ID)
    model = load_base_for(settings, profile)
    prepare_for_training(model, profile)
    set_seed(settings.seed)  # LoRA's A is drawn at random: the seed, not earlier cells, decides the start
    model = get_peft_model(model, lora_config(settings))
    examples = load_examples(settings.task, "train")
    validation = evenly_spaced(load_examples(settings.task, "validation"), VALIDATION_EXAMPLES)
    config = settings.train_config(checkpoint_every=max(10, settings.steps // 4),
                                   eval_every=max(1, settings.steps // VALIDATION_POINTS))
    result = train_with_trainer(model, tokenizer, examples, config, output_dir=folder / "checkpoint",
                                eval_examples=validation, profile=profile)
    log = {"settings": asdict(settings), "losses": result.losses, "validation_losses": result.validation_losses,
           "seconds": result.seconds, "tokens_per_second": result.tokens_per_second,
           "resumed_from": result.resumed_from, "device": profile.kind}
    (folder / "train_log.json").write_text(json.dumps(log, indent=1))
    model.save_pretrained(folder)  # last: the adapter file marks a finished run
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)


def read_train_log(folder: Path) -> dict:
    return json.loads((Path(folder) / "train_log.json").read_text())


def course_adapter_settings(profile: HardwareProfile | None = None, task: str = "sql", **changes) -> AdapterSettings:
    """The course's standard adapter: LoRA r=8, alpha=16 on all linear layers.

    Lessons 04, 08, 09 and 10 ask for it by these settings, so it is trained
    once and then read from the cache. `changes` vary one knob (a rank sweep).
    """
    profile = profile or detect()
    base = AdapterSettings(task=task, r=8, lora_alpha=16, targets="all-linear",
                           steps=profile.pick(cpu=30, gpu=300), batch_size=8, learning_rate=1e-3, seed=0)
    return replace(base, **changes)


SEEDS = (0, 1)  # every comparison trains each choice with these seeds (the same ones for every choice)
YARDSTICK_EXAMPLES = 48  # validation questions in a comparison's answer loss (on a GPU: the whole split)


def experiment_settings(profile: HardwareProfile | None = None, task: str = "sql", **changes) -> AdapterSettings:
    """The budget every comparison of the course trains with: rank, targets, QLoRA vs LoRA, learning rate...

    The standard adapter's settings with a short CPU run (12 steps of 4
    examples; on a GPU the full standard budget). Lessons 04, 08 and 10 ask for
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
    from .compare import ExampleLosses
    from .data import evenly_spaced
    from .models import TINY_MODEL_ID, load_tokenizer

    profile = profile or detect()
    n = profile.pick(cpu=n, gpu=None)
    folder = train_lora_adapter(settings, profile)
    cached = folder / f"losses-{split}-{n or 'all'}.json"
    if cached.exists():
        return ExampleLosses.of(*json.loads(cached.read_text()))
    examples = evenly_spaced(load_examples(settings.task, split), n)
    model = model if model is not None else load_adapted_model(settings, profile)
    sums, counts = answer_token_losses(model, load_tokenizer(settings.model_id or TINY_MODEL_ID), examples)
    write_text_atomic(cached, json.dumps([sums, counts]))
    return ExampleLosses.of(sums, counts)


def load_adapted_model(settings: AdapterSettings, profile: HardwareProfile | None = None, base=None):
    """The base model with the (cached, trained on demand) adapter for `settings` loaded."""
    from peft import PeftModel

    folder = train_lora_adapter(settings, profile)
    base = base if base is not None else load_base_for(settings, profile)
    return PeftModel.from_pretrained(base, folder).eval()


def adapter_report(settings: AdapterSettings, split: str = "test", n: int | None = None,
                   profile: HardwareProfile | None = None, model=None, tokenizer=None) -> EvalReport:
    """Score the adapter for `settings` on `n` evenly spaced examples of `split`; cached.

    Generation is the slow part of evaluation on a CPU, so the scored report
    is stored next to the adapter and reused by later notebooks and re-runs.
    """
    from .data import evenly_spaced
    from .evaluate import ScoredExample
    from .models import TINY_MODEL_ID, load_tokenizer

    folder = train_lora_adapter(settings, profile)
    cached = folder / f"report-{split}-{n or 'all'}.json"
    if cached.exists():
        return EvalReport([ScoredExample(**row) for row in json.loads(cached.read_text())])
    examples = evenly_spaced(load_examples(settings.task, split), n)
    model = model if model is not None else load_adapted_model(settings, profile)
    tokenizer = tokenizer or load_tokenizer(settings.model_id or TINY_MODEL_ID)
    report = evaluate_model(model, tokenizer, examples)
    write_text_atomic(cached, json.dumps([asdict(r) for r in report.results]))
    return report


# ---------------------------------------------------------------------------
# Cached full fine-tune of q_proj and v_proj (lesson 02 takes the SVD of its update;
# lesson 10 compares it with LoRA at equal steps)
# ---------------------------------------------------------------------------

FULL_FINETUNE_FILE = "delta_w.safetensors"  # ΔW = W_after - W_before per trained matrix; written last


def full_finetune_settings(profile: HardwareProfile | None = None, **changes) -> dict:
    """The course's full fine-tune: every q_proj and v_proj matrix trainable, AdamW at lr 1e-5.

    The weights stay fp32 on every device: a full fine-tune moves each weight
    by about the learning rate per step, and in bf16 such a step rounds away
    (lesson 02 shows it). On a CPU 30 steps of 8 examples, on a GPU 100.
    `changes` vary one knob (steps, seed, ...); the settings name the cache folder.
    """
    from .models import TINY_MODEL_ID

    profile = profile or detect()
    settings = dict(model=TINY_MODEL_ID, task="sql", targets=["q_proj", "v_proj"],
                    steps=profile.pick(cpu=30, gpu=100), batch_size=8, learning_rate=1e-5, seed=0,
                    device=profile.kind)
    unknown = sorted(set(changes) - set(settings))
    if unknown:
        raise ValueError(f"Unknown full fine-tune setting(s) {unknown}; choose from {sorted(settings)}.")
    return settings | changes


def full_finetune_config(settings: dict) -> TrainConfig:
    """The course loop's settings for a full fine-tune, with the cached adapters' validation points.

    The validation answer loss is recorded every `steps // VALIDATION_POINTS`
    steps (and before the first step and after the last), as `train_lora_adapter`
    records it, so full fine-tuning and LoRA can be compared step for step.
    """
    return TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"],
                       learning_rate=settings["learning_rate"], seed=settings["seed"],
                       eval_every=max(1, settings["steps"] // VALIDATION_POINTS))


def mark_full_finetune_trainable(model: torch.nn.Module, targets: Sequence[str]) -> dict[str, torch.nn.Parameter]:
    """Freeze everything but the weights of the modules named in `targets`; return those, by name."""
    suffixes = tuple(f"{t}.weight" for t in targets)
    for name, p in model.named_parameters():
        p.requires_grad = name.endswith(suffixes)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise ValueError(f"No weight of the model ends in {list(suffixes)}; check the target names "
                         "(the course's models call them q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).")
    return trainable


def full_finetune_dir(settings: dict) -> Path:
    """The cache folder of a full fine-tune: named by its settings and the training data it saw."""
    from .data import data_path

    train_file = data_path(settings["task"], "train")
    key = settings_key(settings | {"train_data": hashlib.sha256(train_file.read_bytes()).hexdigest()})
    return cache_dir("full_finetune") / f"{settings['task']}-{key}"


def train_full_finetune(settings: dict, profile: HardwareProfile | None = None, force: bool = False) -> Path:
    """Train (or reuse) the full fine-tune of `settings` with the course loop; return its folder.

    The folder holds `delta_w.safetensors` (ΔW per trained matrix, fp32) and
    `train_log.json`: "losses" (training loss per step), "validation_losses"
    [(step, answer loss)] on the same validation examples and at the same
    steps as the cached adapters record theirs, "seconds", "tokens_per_second",
    "settings" and "config". A finished run is reused unless `force=True`.
    """
    from safetensors.torch import save_file

    from .data import evenly_spaced
    from .models import load_model, load_tokenizer

    folder = full_finetune_dir(settings)
    if force and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / FULL_FINETUNE_FILE).exists():
        return folder
    profile = profile or detect()
    tokenizer = load_tokenizer(settings["model"])
    model = load_model(settings["model"], dtype=torch.float32, profile=profile)
    trainable = mark_full_finetune_trainable(model, settings["targets"])
    before = {name: p.detach().clone() for name, p in trainable.items()}
    config = full_finetune_config(settings)
    validation = evenly_spaced(load_examples(settings["task"], "validation"), VALIDATION_EXAMPLES)
    result = train(model, tokenizer, load_examples(settings["task"], "train"), config, eval_examples=validation)
    delta_w = {name: (p.detach() - before[name]).cpu().contiguous() for name, p in trainable.items()}
    log = {"settings": settings, "config": asdict(config), "losses": result.losses,
           "validation_losses": result.validation_losses, "seconds": result.seconds,
           "tokens_per_second": result.tokens_per_second, "device": profile.kind}
    (folder / "train_log.json").write_text(json.dumps(log, indent=1))
    save_file(delta_w, folder / FULL_FINETUNE_FILE)  # written last: its presence marks a complete run
    return folder


def read_delta_w(folder: Path) -> dict[str, torch.Tensor]:
    """ΔW per trained matrix of a cached full fine-tune (fp32, on the CPU)."""
    from safetensors.torch import load_file

    return load_file(Path(folder) / FULL_FINETUNE_FILE)


def load_full_finetune(settings: dict, profile: HardwareProfile | None = None, model=None):
    """The base model with the (cached, trained on demand) full fine-tune's ΔW added, in eval mode."""
    from .models import load_model

    delta_w = read_delta_w(train_full_finetune(settings, profile))
    model = model if model is not None else load_model(settings["model"], dtype=torch.float32, profile=profile)
    params = dict(model.named_parameters())
    missing = sorted(set(delta_w) - set(params))
    if missing:
        raise ValueError(f"The model has no parameter {missing[0]} (of {len(missing)} in ΔW): "
                         "pass the base model the fine-tune started from.")
    with torch.no_grad():
        for name, delta in delta_w.items():
            params[name] += delta.to(params[name].device, params[name].dtype)
    return model.eval()
