"""The cached full fine-tune of q_proj and v_proj.

Lesson 02 takes the SVD of its update ΔW = W_after - W_before; lesson 11
compares it with LoRA at equal steps on the same yardstick. Trained with the
course's own loop (`course_utils.train.train`), once per settings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from .adapters import VALIDATION_EXAMPLES, VALIDATION_POINTS, YARDSTICK_EXAMPLES
from .answers import answer_token_losses
from .cache import cache_dir, exclusive, fsync_path, replace_durably, settings_key, write_text_atomic
from .data import load_examples
from .hardware import detect, HardwareProfile
from .train import train, TrainConfig


# ---------------------------------------------------------------------------
# Cached full fine-tune of q_proj and v_proj (lesson 02 takes the SVD of its update;
# lesson 11 compares it with LoRA at equal steps)
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


def full_finetune_dir(settings: dict, profile: HardwareProfile | None = None) -> Path:
    """The cache folder of a full fine-tune: named by its settings, the training data it saw and, on a GPU,
    the device and compute dtype it trained in (`HardwareProfile.result_key`)."""
    from .data import data_path

    train_file = data_path(settings["task"], "train")
    key = settings_key(settings | {"train_data": hashlib.sha256(train_file.read_bytes()).hexdigest()}
                       | (profile or detect()).result_key())
    return cache_dir("full_finetune") / f"{settings['task']}-{key}"


def train_full_finetune(settings: dict, profile: HardwareProfile | None = None, force: bool = False) -> Path:
    """Train (or reuse) the full fine-tune of `settings` with the course loop; return its folder.

    The folder holds `delta_w.safetensors` (ΔW per trained matrix, fp32) and
    `train_log.json`: "losses" (training loss per step), "validation_losses"
    [(step, answer loss)] on the same validation examples and at the same
    steps as the cached adapters record theirs, "seconds", "tokens_per_second",
    "settings" and "config". A finished run is reused unless `force=True`; two
    notebooks asking at once train it once (the second waits for the first).
    """
    profile = profile or detect()
    folder = full_finetune_dir(settings, profile)
    with exclusive(folder):
        if force and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / FULL_FINETUNE_FILE).exists():
            _train_full_finetune_into(folder, settings, profile)
    return folder


def _train_full_finetune_into(folder: Path, settings: dict, profile: HardwareProfile) -> None:
    from safetensors.torch import save_file

    from .data import evenly_spaced
    from .models import load_model, load_tokenizer

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
    write_text_atomic(folder / "train_log.json", json.dumps(log, indent=1))
    partial = folder / (FULL_FINETUNE_FILE + ".partial")
    save_file(delta_w, partial)
    fsync_path(partial)
    replace_durably(partial, folder / FULL_FINETUNE_FILE)  # last: its presence marks a finished run


def read_delta_w(folder: Path) -> dict[str, torch.Tensor]:
    """ΔW per trained matrix of a cached full fine-tune (fp32, on the CPU)."""
    from safetensors.torch import load_file

    return load_file(Path(folder) / FULL_FINETUNE_FILE)


def _add_delta_w(model: torch.nn.Module, delta_w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add ΔW to the named weights of `model` in place; return their previous values (to restore them)."""
    params = dict(model.named_parameters())
    missing = sorted(set(delta_w) - set(params))
    if missing:
        raise ValueError(f"The model has no parameter {missing[0]} (of {len(missing)} in ΔW): "
                         "pass the base model the fine-tune started from.")
    previous = {name: params[name].detach().clone() for name in delta_w}
    with torch.no_grad():
        for name, delta in delta_w.items():
            params[name] += delta.to(params[name].device, params[name].dtype)
    return previous


def load_full_finetune(settings: dict, profile: HardwareProfile | None = None, model=None):
    """The base model with the (cached, trained on demand) full fine-tune's ΔW added, in eval mode.

    Pass `model` (the base model the fine-tune started from) to add ΔW to it in place.
    """
    from .models import load_model

    delta_w = read_delta_w(train_full_finetune(settings, profile))
    model = model if model is not None else load_model(settings["model"], dtype=torch.float32, profile=profile)
    _add_delta_w(model, delta_w)
    return model.eval()


def full_finetune_example_losses(settings: dict, rank: int | None = None, split: str = "validation",
                                 n: int | None = YARDSTICK_EXAMPLES, profile: HardwareProfile | None = None,
                                 model=None):
    """The yardstick of a cached full fine-tune, per question (`ExampleLosses` on `n` evenly spaced examples); cached.

    `rank=None` scores W_before + ΔW. `rank=k` first replaces every ΔW by its
    best rank-k approximation (truncated SVD), the most a rank-k factorisation
    of this update can hold; `rank=0` scores the base model itself. The same
    questions as `adapter_example_losses`, so `course_utils.compare` can set
    full fine-tuning against LoRA. `model`, if given, must be the base model;
    it is left as it was.
    """
    from .compare import cached_example_losses
    from .data import evenly_spaced
    from .linalg import rank_k_approximation
    from .models import load_model, load_tokenizer

    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
        raise ValueError(f"rank must be None (the whole ΔW) or an integer >= 0 (0: the base model), got {rank!r}.")
    profile = profile or detect()
    n = profile.pick(cpu=n, gpu=None)
    folder = train_full_finetune(settings, profile)
    cached = folder / f"losses-{split}-{n or 'all'}-{'full' if rank is None else f'rank{rank}'}.json"

    def score():
        delta_w = read_delta_w(folder)
        if rank is not None:
            delta_w = {name: rank_k_approximation(delta.to(torch.float64), min(rank, min(delta.shape))).float()
                       for name, delta in delta_w.items()}
        scored = model if model is not None else load_model(settings["model"], dtype=torch.float32, profile=profile)
        previous = _add_delta_w(scored, delta_w)
        try:
            examples = evenly_spaced(load_examples(settings["task"], split), n)
            return answer_token_losses(scored, load_tokenizer(settings["model"]), examples)
        finally:
            params = dict(scored.named_parameters())
            with torch.no_grad():
                for name, value in previous.items():
                    params[name].copy_(value)

    return cached_example_losses(cached, score)
