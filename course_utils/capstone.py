"""The capstone's recipe: every setting of a QLoRA run in one object, and where its files go.

Lesson 10 fine-tunes a 7B model on a GPU (or the tiny model on a CPU) with
transformers' Trainer (`course_utils.trainer.train_with_trainer`). What this
module adds is small:

- `QLoRARecipe`: the settings a learner changes for their own data, with the
  `TrainConfig`, the PEFT `LoraConfig` and the memory plan derived from them,
  so the plan printed before the download is the plan of the run that follows
  (on a T4 that includes the fp32 embeddings and norms of `prepare_for_training`);
- `output_root()` / `QLoRARecipe.run_folder()`: checkpoints go to Google Drive
  when it is mounted on Colab (a disconnect wipes the VM's disk, not Drive),
  else to the course cache; the folder is named by a hash of the settings, so
  re-running the notebook finds its own checkpoint and resumes;
- `available_ram_bytes()`: merging a 7B adapter into a 16-bit model happens in
  system RAM, which is the usual trap on Colab (about 12.7 GB).
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .cache import cache_dir, settings_key
from .hardware import HardwareProfile

DRIVE_FOLDER = Path("/content/drive/MyDrive")  # where Colab mounts Google Drive
DRIVE_SUBFOLDER = "lora-course"


def output_root(drive_folder: str | os.PathLike = DRIVE_FOLDER) -> Path:
    """Where runs are written: a subfolder of a mounted Google Drive, else the course cache.

    A Colab runtime loses its local disk when it disconnects; Drive survives,
    so the checkpoint is still there when the notebook is re-run.
    """
    drive = Path(drive_folder)
    if drive.is_dir():
        root = drive / DRIVE_SUBFOLDER / "capstone"
        root.mkdir(parents=True, exist_ok=True)
        return root
    return cache_dir("capstone")


@dataclass(frozen=True)
class QLoRARecipe:
    """Everything that decides a QLoRA run; its hash names the run's folder."""

    model_id: str = "Qwen/Qwen2.5-7B-Instruct"
    task: str = "sql"
    rank: int = 16
    lora_alpha: int = 32
    targets: str = "all-linear"  # peft's "all-linear": every linear layer except the output head
    lora_dropout: float = 0.0
    steps: int = 150
    batch_size: int = 2  # micro-batch: what is on the device at once
    grad_accum: int = 4  # micro-batches per optimizer step (effective batch = batch_size x grad_accum)
    seq_len: int = 512  # longest training sequence, in tokens
    learning_rate: float = 2e-4
    warmup_steps: int = 5
    optimizer: str = "paged_adamw_8bit"
    gradient_checkpointing: bool = True
    checkpoint_every: int = 25
    eval_every: int = 25  # steps between validation answer losses (the validation curve)
    eval_examples: int = 64  # validation examples in that loss
    double_quant: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name, usual in (("rank", "8 or 16 are usual"), ("steps", "e.g. 150"), ("batch_size", "e.g. 2"),
                            ("grad_accum", "1 means none"), ("seq_len", "e.g. 512"),
                            ("checkpoint_every", "e.g. 25"), ("eval_every", "e.g. 25"), ("eval_examples", "e.g. 64")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r} ({usual}).")
            object.__setattr__(self, name, int(value))  # a NumPy integer too: the recipe's hash reads plain ints
        if (isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, numbers.Real)
                or not math.isfinite(self.lora_alpha) or self.lora_alpha <= 0):
            raise ValueError(f"lora_alpha must be a finite positive number, got {self.lora_alpha!r} "
                             "(the recipe uses 2 x rank).")
        self.train_config()  # learning rate, optimizer and the rest are checked by TrainConfig

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def with_changes(self, **changes) -> "QLoRARecipe":
        return replace(self, **changes)

    def train_config(self):
        """The course loop's `TrainConfig` for this recipe."""
        from .train import TrainConfig

        return TrainConfig(steps=self.steps, batch_size=self.batch_size, grad_accum=self.grad_accum,
                           learning_rate=self.learning_rate, warmup_steps=self.warmup_steps,
                           max_length=self.seq_len, seed=self.seed, optimizer=self.optimizer,
                           gradient_checkpointing=self.gradient_checkpointing,
                           checkpoint_every=self.checkpoint_every, eval_every=self.eval_every)

    def lora_config(self):
        """PEFT's `LoraConfig` for this recipe."""
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=self.targets, task_type="CAUSAL_LM")

    def plan(self, profile: HardwareProfile):
        """The memory planner's prediction for this recipe on `profile` (nothing is downloaded).

        On an fp16 GPU (a T4) `prepare_for_training` keeps the embeddings, head
        and norms in fp32, and the plan prices them so.
        """
        from .memory import plan_memory
        from .trainer import planned_dtypes

        return plan_memory(self.model_id, "qlora", rank=self.rank, targets=self.targets, batch=self.batch_size,
                           seq_len=self.seq_len, gradient_checkpointing=self.gradient_checkpointing,
                           optimizer=self.optimizer, double_quant=self.double_quant, profile=profile,
                           name=self.model_id, **planned_dtypes(profile))

    def run_folder(self, root: str | os.PathLike | None = None) -> Path:
        """`root`/<model>-<task>-r<rank>-<hash>: one folder per distinct run.

        The hash covers every setting and the training file's contents, so a
        re-run finds its own checkpoint, and changed data never resumes a stale one.
        """
        from .data import data_path

        root = Path(root) if root is not None else output_root()
        short = self.model_id.rsplit("/", 1)[-1]
        data = hashlib.sha256(data_path(self.task, "train").read_bytes()).hexdigest()
        return root / f"{short}-{self.task}-r{self.rank}-{settings_key(asdict(self) | {'train_data': data})}"


def available_ram_bytes() -> int:
    """System RAM free for a new allocation now (psutil's `available`, else /proc/meminfo)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("Cannot tell how much RAM is free: install psutil (`pip install psutil`).")
