"""A small, readable training loop with checkpoints, and batched generation.

One loop serves every lesson: a full fine-tune of a few matrices (lesson 02),
LoRA and QLoRA adapters (lessons 04, 07) and the 7B capstone (lesson 08). It
is seeded so that a run can be reproduced, and it checkpoints the trainable
weights, the optimizer and the data position, so that a run interrupted (a
Colab disconnect) resumes where it stopped and ends with the same losses as an
uninterrupted run.

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

from .cache import cache_dir, settings_key
from .data import load_examples, prompt_text, training_features
from .evaluate import EvalReport, score_task
from .hardware import HardwareProfile, detect

OPTIMIZERS = ("adamw", "paged_adamw_8bit", "adamw_8bit", "sgd")


@dataclass
class TrainConfig:
    """The knobs of the loop; defaults suit LoRA on the tiny model on a CPU."""

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

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise ValueError("steps, batch_size and grad_accum must be positive integers.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}.")


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    seconds: float = 0.0  # wall time of the steps run in this call
    tokens: int = 0  # tokens processed in this call
    resumed_from: int = 0  # step the run resumed from (0 = fresh)

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


def save_checkpoint(folder: Path, model, optimizer, scheduler, step: int, losses: list[float]) -> None:
    """Trainable weights, optimizer, schedule, step and losses; written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step, "losses": losses,
             "torch_rng": torch.get_rng_state()}
    tmp = folder / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / CHECKPOINT_FILE)


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> tuple[int, list[float]]:
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)
    params = dict(model.named_parameters())
    missing = [n for n in state["trainable"] if n not in params]
    if missing:
        raise ValueError(f"Checkpoint in {folder} does not fit this model (e.g. {missing[0]}); "
                         "use a fresh output folder or the same model and LoRA settings.")
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"], list(state["losses"])


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
          stop_after: int | None = None) -> TrainResult:
    """Train the parameters of `model` that require grad on `examples`.

    With `output_dir`, a checkpoint is written every `checkpoint_every` steps
    and at the end, and a run finding a checkpoint there resumes from it.
    `stop_after` ends the call early after that many steps (to simulate a
    disconnect in tests and lessons); re-running then resumes.
    """
    set_seed(config.seed)
    device = next(model.parameters()).device
    features = [training_features(tokenizer, e, config.max_length) for e in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    undo_cpu_inference_packing(model)  # an evaluated NF4 model on the CPU would otherwise get no gradients
    optimizer = make_optimizer(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, config))
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    folder = Path(output_dir) if output_dir else None
    step, losses = 0, []
    if folder and (folder / CHECKPOINT_FILE).exists():
        step, losses = load_checkpoint(folder, model, optimizer, scheduler)
    result = TrainResult(losses=losses, resumed_from=step)
    if step >= config.steps:
        return result
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
        if folder and config.checkpoint_every and done % config.checkpoint_every == 0 and done < end:
            save_checkpoint(folder, model, optimizer, scheduler, done, losses)
    result.seconds = time.perf_counter() - start_time
    if folder:
        save_checkpoint(folder, model, optimizer, scheduler, end, losses)
    model.eval()
    return result


@torch.no_grad()
def generate_answers(model, tokenizer, examples: Sequence[dict], max_new_tokens: int = 64,
                     batch_size: int = 16, progress: bool = True) -> list[str]:
    """Greedy answers for a list of examples, in batches (left padding)."""
    device = next(model.parameters()).device
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


def evaluate_model(model, tokenizer, examples: Sequence[dict], batch_size: int = 16,
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


def train_lora_adapter(settings: AdapterSettings, profile: HardwareProfile | None = None,
                       force: bool = False) -> Path:
    """Train (or reuse) a PEFT LoRA adapter for `settings`; return its folder.

    The folder holds the adapter (safetensors), `settings.json` and
    `train_log.json` (losses, time, tokens/s). An interrupted training resumes
    from its checkpoint; a finished one is reused unless `force=True`.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    from .models import TINY_MODEL_ID, load_tokenizer

    folder = adapter_dir(settings)
    if force and folder.exists():
        shutil.rmtree(folder)
    if (folder / "adapter_model.safetensors").exists():
        return folder
    profile = profile or detect()
    tokenizer = load_tokenizer(settings.model_id or TINY_MODEL_ID)
    model = load_base_for(settings, profile)
    if settings.quantization:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, lora_config(settings))
    examples = load_examples(settings.task, "train")
    config = settings.train_config(checkpoint_every=max(10, settings.steps // 4))
    result = train(model, tokenizer, examples, config, output_dir=folder / "checkpoint")
    model.save_pretrained(folder)
    log = {"settings": asdict(settings), "losses": result.losses, "seconds": result.seconds,
           "tokens_per_second": result.tokens_per_second, "resumed_from": result.resumed_from,
           "device": profile.kind}
    (folder / "train_log.json").write_text(json.dumps(log, indent=1))
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    return folder


def read_train_log(folder: Path) -> dict:
    return json.loads((Path(folder) / "train_log.json").read_text())


def course_adapter_settings(profile: HardwareProfile | None = None, task: str = "sql", **changes) -> AdapterSettings:
    """The course's standard adapter: LoRA r=8, alpha=16 on all linear layers.

    Lessons 04, 07, 08 and 09 ask for it by these settings, so it is trained
    once and then read from the cache. `changes` vary one knob (a rank sweep).
    """
    profile = profile or detect()
    base = AdapterSettings(task=task, r=8, lora_alpha=16, targets="all-linear",
                           steps=profile.pick(cpu=30, gpu=300), batch_size=8, learning_rate=1e-3, seed=0)
    return replace(base, **changes)


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
    cached.write_text(json.dumps([asdict(r) for r in report.results]))
    return report
