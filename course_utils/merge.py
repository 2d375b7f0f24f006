"""Merge a LoRA adapter into a base checkpoint one safetensors shard at a time.

`PeftModel.merge_and_unload()` needs the whole 16-bit model in RAM: about 15 GB
for a 7B model, more than a free Colab runtime has (about 12.7 GB). A merge
does not need that: each merged weight is W + scaling * B A of one matrix, so
the checkpoint can be rewritten shard by shard: read one shard, add B A to the
weights the adapter targets, write it, free it. Peak RAM is about one shard
(4-5 GB for a 7B checkpoint, often less) plus the adapter.

The result is the same model `merge_and_unload()` gives, weight for weight:
the update is computed and rounded as PEFT does it (`add_update`), and every
tensor keeps the dtype it has in the checkpoint, so a bf16 checkpoint merges
into bf16.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


@dataclass
class MergeReport:
    shards: int  # shards rewritten
    merged_weights: int  # weights that received B A
    largest_shard_bytes: int  # about the peak RAM the merge needed
    output: Path


def _lora_scaling(config: dict) -> float:
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def read_adapter(adapter_dir: str | os.PathLike) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """{base weight name: (A, B)} and the scaling of a saved PEFT LoRA adapter."""
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: point adapter_dir at the folder that "
                                    "`model.save_pretrained()` wrote for the adapter.")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    unsupported = [key for key in ("use_dora", "modules_to_save", "fan_in_fan_out") if config.get(key)]
    if config.get("peft_type", "LORA") != "LORA" or unsupported:
        raise ValueError(f"{folder}: a shard-wise merge handles plain LoRA on linear layers; this adapter uses "
                         f"{unsupported or config.get('peft_type')}. Merge it with PeftModel.merge_and_unload().")
    tensors = load_file(folder / ADAPTER_WEIGHTS)
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        pairs[module + ".weight"] = (a, tensors[key.replace(".lora_A.", ".lora_B.")])
    if not pairs:
        raise ValueError(f"{folder / ADAPTER_WEIGHTS} holds no lora_A/lora_B pairs.")
    return pairs, _lora_scaling(config)


def add_update(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """W + scaling * B A, rounded as PEFT's merge rounds it.

    PEFT computes B A in fp32 (casting a 16-bit adapter up, and the product
    back to its dtype), then adds it in place: the sum is formed in the wider of
    the two dtypes and rounded once to the weight's dtype.
    """
    delta = (b.float() @ a.float()) * scaling
    if b.dtype != torch.float32:
        delta = delta.to(b.dtype)
    return (weight.to(torch.promote_types(weight.dtype, delta.dtype)) + delta).to(weight.dtype)


def base_shards(base_dir: Path) -> list[str]:
    """The safetensors files of a checkpoint, from its index (sharded) or the single file."""
    if (base_dir / INDEX_FILE).is_file():
        return sorted(set(json.loads((base_dir / INDEX_FILE).read_text())["weight_map"].values()))
    if (base_dir / SINGLE_FILE).is_file():
        return [SINGLE_FILE]
    raise FileNotFoundError(f"{base_dir} has neither {INDEX_FILE} nor {SINGLE_FILE}: point base_dir at a "
                            "transformers checkpoint folder (course_utils.models.resolve_model(model_id).path).")


def merge_adapter_shardwise(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike,
                            output_dir: str | os.PathLike, progress: bool = True) -> MergeReport:
    """Write base + adapter as a merged checkpoint in `output_dir`, one shard in memory at a time."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    base, output = Path(base_dir), Path(output_dir)
    if output.resolve() == base.resolve():
        raise ValueError("output_dir must differ from base_dir: the base checkpoint is read while the merge is written.")
    pairs, scaling = read_adapter(adapter_dir)
    shards = base_shards(base)
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    merged, largest = 0, 0
    for shard in tqdm(shards, desc="merging shards", disable=not progress):
        tensors = {}
        with safe_open(base / shard, framework="pt") as handle:
            metadata = handle.metadata()
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if key in pairs:
                    a, b = pairs[key]
                    tensor = add_update(tensor, a, b, scaling)
                    merged += 1
                tensors[key] = tensor
        largest = max(largest, sum(t.numel() * t.element_size() for t in tensors.values()))
        save_file(tensors, partial / shard, metadata=metadata or {"format": "pt"})
        del tensors
    if merged != len(pairs):
        shutil.rmtree(partial)
        raise ValueError(f"the adapter targets {len(pairs)} weights but the base checkpoint in {base} holds only "
                         f"{merged} of them: merge the adapter into the model it was trained on.")
    for extra in base.iterdir():  # config, index, tokenizer, generation config: copied as they are
        if extra.is_file() and not extra.name.endswith(".safetensors"):
            shutil.copy2(extra, partial / extra.name)
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)  # atomic: an interrupted merge never looks complete
    return MergeReport(shards=len(shards), merged_weights=merged, largest_shard_bytes=largest, output=output)
