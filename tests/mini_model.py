"""A two-layer model with SmolLM2's architecture and vocabulary and random weights, for tests of mechanics.

Resuming, refusing another run's checkpoints, keeping two checkpoints, stopping on a
non-finite loss: none of these depends on what the model knows, and on the 135M
model each such test spent 10-20 s of a CPU on forward and backward passes. This
model does the same work in a fraction of that (hidden size 64 instead of 576, two
layers instead of 30). Tests whose assertion reads the model's knowledge (a loss that
must differ between two label sets, say) keep the real model.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16)


@functools.lru_cache(maxsize=None)
def mini_model_dir() -> Path:
    """A folder holding the mini model (config.json, safetensors, SmolLM2's tokenizer), written once per process."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from course_utils.models import load_tokenizer, resolve_model

    real = AutoConfig.from_pretrained(resolve_model().path)
    config = real.__class__(**(real.to_dict() | SHAPE))
    with torch.random.fork_rng():  # building it must not move the caller's generator (LoRA's A is drawn next)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    folder = Path(tempfile.mkdtemp(prefix="course-mini-model-"))
    atexit.register(shutil.rmtree, folder, True)
    model.save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)  # a model folder is complete with its tokenizer (models.check_model_files)
    return folder


def load_mini_model(**kwargs):
    """`course_utils.models.load_model` on the mini model: the course's loading path, a smaller model."""
    from course_utils.models import load_model

    return load_model(local_dir=mini_model_dir(), **kwargs)
