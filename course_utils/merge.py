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


MERGE_MARKER = "course_merge.json"  # written by a merge into its output: marks a folder a re-run may replace

# LoraConfig settings whose adapters are not W + (alpha / r) B A on linear weights: a shard-wise merge of them
# would write wrong weights without an error, so they are refused by name (PEFT's merge_and_unload knows them).
UNSUPPORTED = {
    "use_dora": "DoRA rescales each merged column by a learned magnitude",
    "modules_to_save": "modules_to_save stores whole trained copies of modules",
    "fan_in_fan_out": "fan_in_fan_out stores weights transposed (GPT-2's Conv1D)",
    "rank_pattern": "rank_pattern gives some modules another rank, hence another alpha / r",
    "alpha_pattern": "alpha_pattern gives some modules another alpha, hence another scaling",
    "layer_replication": "layer_replication adds layers the base checkpoint does not have",
    "lora_bias": "lora_bias trains a bias on lora_B",
    "target_parameters": "target_parameters adapts parameters, not linear layers",
    "trainable_token_indices": "trainable_token_indices trains rows of the embeddings",
    "use_qalora": "QA-LoRA pools the input before A",
    "use_bdlora": "BD-LoRA's block-diagonal A or B",
    "alora_invocation_tokens": "activated LoRA applies the update only after its invocation tokens",
}
# Initialisations a merge into the original checkpoint gets right: B A starts at zero (or, "orthogonal", as a
# product the trained adapter still holds) and the base weights stay as they were. The others (PiSSA, OLoRA,
# CorDA, LoftQ, LoRA-GA, ASTRA, MiCA...) change the base weights or correct them: merging would count part of
# the update twice, so they are refused.
MERGEABLE_INITS = {"true", "false", "gaussian", "eva", "orthogonal", "nora"}
# Settings of variants whose update is not B A (refused when set).
VARIANT_CONFIGS = ("kasa_config", "monteclora_config", "arrow_config", "velora_config", "megatron_config")


def _lora_scaling(config: dict) -> float:
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def _refuse_unsupported(folder: Path, config: dict) -> None:
    """Every setting a shard-wise merge would get wrong, named, before anything is written."""
    reasons = [f"{key} ({why})" for key, why in UNSUPPORTED.items() if config.get(key)]
    if config.get("peft_type", "LORA") != "LORA":
        reasons.insert(0, f"peft_type {config.get('peft_type')!r} (not LoRA)")
    if config.get("bias", "none") != "none":
        reasons.append(f"bias={config['bias']!r} (the adapter trains the base's biases too)")
    if str(config.get("init_lora_weights", True)).lower() not in MERGEABLE_INITS:
        reasons.append(f"init_lora_weights={config['init_lora_weights']!r} (an initialisation that changes or "
                       "corrects the base weights)")
    reasons += [f"{key} (another update than B A)" for key in VARIANT_CONFIGS if config.get(key)]
    if not isinstance(config.get("r"), int) or not isinstance(config.get("lora_alpha"), (int, float)):
        reasons.append(f"r={config.get('r')!r}, lora_alpha={config.get('lora_alpha')!r} (need numbers)")
    if reasons:
        raise ValueError(f"{folder / ADAPTER_CONFIG}: a shard-wise merge handles plain LoRA on linear layers; "
                         f"this adapter uses {'; '.join(reasons)}. Merge it with PeftModel.merge_and_unload() "
                         "(with enough RAM for the whole model), which knows these settings.")


def read_adapter(adapter_dir: str | os.PathLike) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """{base weight name: (A, B)} and the scaling of a saved PEFT LoRA adapter.

    Refuses, naming the file and the fix, an adapter it cannot merge exactly:
    a missing or damaged file, a setting other than plain LoRA on linear layers
    (`UNSUPPORTED`), LoRA on embeddings, a lora_A without its lora_B.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: point adapter_dir at the folder that "
                                    "`model.save_pretrained()` wrote for the adapter.")
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise ValueError(f"{folder / ADAPTER_CONFIG} is not valid JSON ({error}): it is damaged; save the adapter "
                         "again with model.save_pretrained(folder).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{folder / ADAPTER_CONFIG} holds {type(config).__name__}, not a LoRA config: save the "
                         "adapter again with model.save_pretrained(folder).")
    _refuse_unsupported(folder, config)
    try:
        tensors = load_file(folder / ADAPTER_WEIGHTS)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{folder / ADAPTER_WEIGHTS} cannot be read ({error}): the file is truncated or damaged "
                         "(a save cut off?); save the adapter again with model.save_pretrained(folder).") from None
    embeddings = sorted(k for k in tensors if "lora_embedding_" in k)
    if embeddings:
        raise ValueError(f"{folder / ADAPTER_WEIGHTS} holds LoRA on embeddings ({embeddings[0]}, ...), which a "
                         "shard-wise merge does not handle: merge it with PeftModel.merge_and_unload().")
    others = sorted(k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight")))
    if others:  # a DoRA magnitude, a bias, a variant's extra tensor: not part of W + s B A
        raise ValueError(f"{folder / ADAPTER_WEIGHTS} holds {len(others)} tensors that are not LoRA's A or B "
                         f"({others[0]}, ...), which a shard-wise merge does not handle: merge it with "
                         "PeftModel.merge_and_unload().")
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        partner = key.replace(".lora_A.", ".lora_B.")
        if partner not in tensors:
            raise ValueError(f"{folder / ADAPTER_WEIGHTS} has {key} but not {partner}: the file is incomplete; "
                             "save the adapter again with model.save_pretrained(folder).")
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        pairs[module + ".weight"] = (a, tensors[partner])
    if not pairs:
        raise ValueError(f"{folder / ADAPTER_WEIGHTS} holds no lora_A/lora_B pairs.")
    return pairs, _lora_scaling(config)


def add_update(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """W + scaling * B A, rounded as PEFT's merge rounds it.

    PEFT computes B A in fp32 (casting a 16-bit adapter up, and the product
    back to its dtype), then adds it in place: the sum is formed in the wider of
    the two dtypes and rounded once to the weight's dtype.
    """
    if b.shape[0] != weight.shape[0] or a.shape[1] != weight.shape[1] or a.shape[0] != b.shape[1]:
        raise ValueError(f"B {tuple(b.shape)} A {tuple(a.shape)} cannot update a weight of shape "
                         f"{tuple(weight.shape)}: the adapter was trained on a model of other shapes.")
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


def _check_output(output: Path, base: Path, adapter: Path) -> None:
    """Refuse an output folder whose replacement would lose something: the inputs, or files no merge wrote."""
    out = output.resolve()
    for role, folder in (("base_dir", base), ("adapter_dir", adapter)):
        inside = folder.resolve()
        if out == inside or out in inside.parents or inside in out.parents:
            where = "is" if out == inside else "contains" if out in inside.parents else "is inside"
            raise ValueError(f"output_dir {output} {where} {role} {folder}: the merge writes a new folder; choose one "
                             f"outside both inputs, e.g. {base.parent / (base.name + '-merged')}.")
    if output.is_symlink():
        raise ValueError(f"output_dir {output} is a link: give the folder it points to ({out}), so that the merge "
                         "lands there and the link is not replaced.")
    if output.exists() and not output.is_dir():
        raise ValueError(f"output_dir {output} is a file: choose a folder name for the merged model.")
    if output.is_dir() and not (output / MERGE_MARKER).is_file():
        held = sorted(p.name for p in output.iterdir())
        if held:
            raise ValueError(f"output_dir {output} already holds {len(held)} entries no merge wrote "
                             f"({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); nothing was changed. Choose "
                             "a new or empty folder, or move that one away yourself.")


def _added_since_merge(output: Path) -> list[Path]:
    """What was put into an earlier merge's output after it was written (a tokenizer, notes, an export)."""
    if not (output / MERGE_MARKER).is_file():
        return sorted(output.iterdir())
    try:
        written = set(json.loads((output / MERGE_MARKER).read_text())["files"])
    except (ValueError, KeyError, TypeError):  # a marker without its list: nothing known to be added
        return []
    return sorted(p for p in output.iterdir() if p.name not in written | {MERGE_MARKER})


def _carry_added(old: Path, new: Path) -> None:
    """Move what was added to the earlier output `old` since its merge into the new output `new`, where it
    replaces a merge file of the same name; the new marker then no longer lists that name as the merge's."""
    added = _added_since_merge(old)
    for entry in added:
        target = new / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        entry.rename(target)
    if added and (new / MERGE_MARKER).is_file():
        marker = json.loads((new / MERGE_MARKER).read_text())
        marker["files"] = sorted(set(marker.get("files", [])) - {e.name for e in added})
        (new / MERGE_MARKER).write_text(json.dumps(marker, indent=1))


def _recover_siblings(output: Path) -> None:
    """Tidy what a merge killed mid-way (SIGKILL, out of memory) left beside `output`: a half-written
    `.NAME.merging-*` folder (only the merge's own files) is removed; an earlier output moved aside into
    `.NAME.replaced-*` is put back if `output` is missing, else what was added to it is carried into
    `output` before it is removed."""
    for stale in output.parent.glob(f".{output.name}.merging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for aside in output.parent.glob(f".{output.name}.replaced-*"):
        if (aside / output.name).is_dir():
            if not output.exists():
                (aside / output.name).rename(output)
            elif (output / MERGE_MARKER).is_file():
                _carry_added(aside / output.name, output)
            else:
                continue  # not ours to decide: left for the learner
        shutil.rmtree(aside, ignore_errors=True)


def merge_adapter_shardwise(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike,
                            output_dir: str | os.PathLike, progress: bool = True) -> MergeReport:
    """Write base + adapter as a merged checkpoint in `output_dir`, one shard in memory at a time.

    Nothing is lost: `output_dir` must be new, empty or an earlier merge's output (its `MERGE_MARKER`
    lists the files it wrote; anything added to it since, such as a saved tokenizer or an export, is
    carried into the new output), and must not be a link or hold or sit in either input. The merge is
    written into a hidden sibling folder that replaces `output_dir` only once complete; an error removes
    it and keeps the earlier output, and the next merge tidies what a killed one left beside `output_dir`.
    """
    import tempfile

    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    base, output = Path(base_dir), Path(output_dir)
    if output.parent.is_dir():
        _recover_siblings(output)
    _check_output(output, base, Path(adapter_dir))
    pairs, scaling = read_adapter(adapter_dir)
    shards = base_shards(base)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.merging-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(partial, 0o777 & ~umask)  # mkdtemp's 0700 would keep the merged model from other users
    merged, largest, replaced = 0, 0, None
    try:
        for shard in tqdm(shards, desc="merging shards", disable=not progress):
            tensors = {}
            try:
                with safe_open(base / shard, framework="pt") as handle:
                    metadata = handle.metadata()
                    for key in handle.keys():
                        tensors[key] = handle.get_tensor(key)
            except (SafetensorError, OSError) as error:
                raise ValueError(f"{base / shard} cannot be read ({error}): the base checkpoint is damaged or "
                                 "incomplete; download it again.") from None
            for key in tensors.keys() & pairs.keys():
                a, b = pairs[key]
                try:
                    tensors[key] = add_update(tensors[key], a, b, scaling)
                except ValueError as error:
                    raise ValueError(f"{key}: {error} Merge the adapter in {adapter_dir} into the model it was "
                                     f"trained on, not {base}.") from None
                merged += 1
            largest = max(largest, sum(t.numel() * t.element_size() for t in tensors.values()))
            save_file(tensors, partial / shard, metadata=metadata or {"format": "pt"})
            del tensors
        if merged != len(pairs):
            raise ValueError(f"the adapter targets {len(pairs)} weights but the base checkpoint in {base} holds "
                             f"only {merged} of them: merge the adapter into the model it was trained on.")
        for extra in base.iterdir():  # config, index, tokenizer, generation config: copied as they are
            if extra.is_file() and not extra.name.endswith(".safetensors"):
                shutil.copy2(extra, partial / extra.name)
        (partial / MERGE_MARKER).write_text(json.dumps({
            "base_dir": str(base), "adapter_dir": str(adapter_dir), "merged_weights": merged, "scaling": scaling,
            "files": sorted(p.name for p in partial.iterdir())}, indent=1))
        if output.exists():  # checked again: the merge took minutes, and the folder may have changed meanwhile
            _check_output(output, base, Path(adapter_dir))
            replaced = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.replaced-"))
            output.rename(replaced / output.name)
        partial.rename(output)  # atomic: an interrupted merge never looks complete
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if replaced is not None:
            if not output.exists() and (replaced / output.name).is_dir():  # put the earlier merge back
                (replaced / output.name).rename(output)
            shutil.rmtree(replaced, ignore_errors=True)
        raise
    if replaced is not None:  # what the learner added to the earlier output since its merge is kept
        _carry_added(replaced / output.name, output)  # (an error here leaves it aside: the next merge carries it)
        shutil.rmtree(replaced, ignore_errors=True)
    return MergeReport(shards=len(shards), merged_weights=merged, largest_shard_bytes=largest, output=output)
