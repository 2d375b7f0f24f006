"""QLoRA opened up: what a 4-bit model stores, what it computes with, and how its adapters start.

Lessons 08 and 09 use these helpers; each one is small and says why it exists.

- `load_format` loads the tiny model in one storage format (fp32, int8, FP4, NF4,
  NF4 + double quantization) and makes sure bitsandbytes' CPU bf16 shortcut is off,
  so a CPU computes what a GPU computes: dequantize, then matmul in the compute dtype.
- `most_distinct_per_block` tells weights that were 4-bit once (the offline
  copy's Q4_1 values: at most 16 distinct values per block of 32) from original ones.
- `storage_table` groups every tensor of a model by the role of its module
  (4-bit decoder linear, embedding, norm, LoRA matrix...), so a learner sees what
  is stored in 4 bits and what is not. The quantization constants hide in each
  weight's `quant_state` (not a parameter, not a buffer): `quant_state_tensors`
  lists them; `course_utils.memory.stored_bytes` counts them.
- `four_bit_linear` builds one bitsandbytes 4-bit layer from a weight, with a chosen
  format, double quantization and compute dtype: the unit of the "DQ is not the
  compute dtype" grid.
- `dequantize_weight` and `dequantized_equivalent` turn 4-bit weights back into
  ordinary ones. On a CPU a 4-bit model dequantizes every weight for every token
  it generates; its dequantized equivalent (plus the adapter's update) computes the
  same logits as a plain model, many times faster.
- `loftq_factors` and `apply_loftq`: LoftQ's initialisation (Li et al. 2023) for a
  fixed 4-bit base: start B A at the best rank-r approximation of the quantization
  error W - Q(W), divided by LoRA's scaling, so that Q(W) + scaling B A is as close to W
  as rank r allows. PEFT's versions (`init_lora_weights="loftq"`,
  `replace_lora_weights_loftq`) run on CUDA only and leave out the scaling
  (huggingface/peft#1982); this one runs anywhere.
- `paged_tensor_sizes`: which optimizer states a bitsandbytes paged optimizer
  actually pages (tensors of 100,000 elements or more).
- `count_layer_calls`: how many times a training step runs each decoder layer's
  forward (once, or twice with gradient checkpointing).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from .hardware import HardwareProfile, detect
from .quant import distinct_per_block

MiB = 2**20
PAGED_MIN_NUMEL = 100_000  # bitsandbytes pages an optimizer state only for tensors this large (optim/optimizer.py)


# --------------------------------------------------------------------------- loading and storage


def cpu_shortcut_layers(model: torch.nn.Module) -> int:
    """How many 4-bit layers would take bitsandbytes' CPU bf16 shortcut (0 once `load_model` switched it off)."""
    return sum(bool(getattr(m, "support_avx512bf16_for_cpu", False)) for m in model.modules())


def load_format(quantization: str | None, double_quant: bool = False, profile: HardwareProfile | None = None,
                **kwargs):
    """The course's tiny model in one storage format: None (unquantized), "int8", "fp4" or "nf4".

    `course_utils.models.load_model` already switches off bitsandbytes' CPU bf16
    shortcut on every 4-bit layer; this checks that it did, because with the
    shortcut a CPU would compute in bf16 and repack the weights (undoing double
    quantization) whatever the configuration says.
    """
    from .models import load_model

    model = load_model(quantization=quantization, double_quant=double_quant, profile=profile or detect(), **kwargs)
    if cpu_shortcut_layers(model):
        raise RuntimeError("bitsandbytes' CPU bf16 shortcut is still on: course_utils.models.keep_cpu_compute_dtype "
                           "did not reach every 4-bit layer (a bitsandbytes version the course does not know?).")
    return model


def quant_state_tensors(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors a quantized weight keeps outside `parameters()` and `buffers()`.

    4-bit (bitsandbytes `quant_state`): the block absmax, the 16-entry code table
    and, with double quantization, the offset and the nested state's absmax and
    256-entry code. int8: one fp32 scale per output row (`SCB`). Unquantized: none.
    """
    found: dict[str, torch.Tensor] = {}
    state, prefix = getattr(weight, "quant_state", None), ""
    while state is not None:
        for name in ("absmax", "code", "offset"):
            value = getattr(state, name, None)
            if isinstance(value, torch.Tensor):
                found[prefix + name] = value
        state, prefix = getattr(state, "state2", None), prefix + "state2."
    if isinstance(getattr(weight, "SCB", None), torch.Tensor):
        found["SCB"] = weight.SCB
    return found


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def role(name: str, module: torch.nn.Module) -> str:
    """What a module is for, in the words of lesson 08's storage table."""
    import bitsandbytes as bnb

    if "lora_" in name:
        return "LoRA A and B (trainable)"
    if isinstance(module, bnb.nn.Linear4bit):
        return "decoder linear (4-bit)"
    if isinstance(module, torch.nn.Embedding):
        return "embedding"
    if type(module).__name__.endswith("RMSNorm"):
        return "RMSNorm"
    if name.endswith("lm_head"):
        return "lm_head"
    return type(module).__name__


@dataclass
class StorageRow:
    """Tensors of one (role, module type, dtype) group; shared storage (tied weights) counted once."""

    tensors: int = 0
    elements: int = 0
    bytes: int = 0


def storage_table(model: torch.nn.Module) -> dict[tuple[str, str, str], StorageRow]:
    """(role, module type, dtype) -> StorageRow, over every parameter and buffer of `model`.

    A packed 4-bit weight counts as uint8 elements (two codes per byte); its
    quantization constants are not parameters and are not in this table
    (`quant_state_tensors`, `course_utils.memory.stored_bytes`).
    """
    table: dict[tuple[str, str, str], StorageRow] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            key = (role(name, module), type(module).__name__, str(tensor.dtype).removeprefix("torch."))
            row = table.setdefault(key, StorageRow())
            pointer = tensor.untyped_storage().data_ptr()
            row.tensors += 1
            if pointer not in seen:
                row.elements += tensor.numel()
                row.bytes += tensor_bytes(tensor)
            seen.add(pointer)
    return table


def format_storage_table(table: dict[tuple[str, str, str], StorageRow]) -> str:
    """The table as text, largest group first, with each group's share of the bytes."""
    total = sum(row.bytes for row in table.values()) or 1
    lines = [f"{'role':<26} {'module type':<22} {'dtype':<9} {'tensors':>7} {'elements':>12} {'MiB':>8} {'share':>6}"]
    for (who, kind, dtype), row in sorted(table.items(), key=lambda item: -item[1].bytes):
        lines.append(f"{who:<26} {kind:<22} {dtype:<9} {row.tensors:7d} {row.elements:12,d} "
                     f"{row.bytes / MiB:8.2f} {row.bytes / total:6.1%}")
    return "\n".join(lines)


def dtypes_by_role(table: dict[tuple[str, str, str], StorageRow]) -> dict[str, set[str]]:
    """role -> the dtypes its tensors are stored in."""
    found: dict[str, set[str]] = {}
    for who, _, dtype in table:
        found.setdefault(who, set()).add(dtype)
    return found


def most_distinct_per_block(weight: torch.Tensor, block_size: int = 32) -> int:
    """The largest number of distinct values in any block of `block_size` consecutive weights.

    The signature of weights that were stored in a 4-bit GGUF format once:
    Q4_1 (the course's offline copy) keeps 16 evenly spaced levels per block of
    32, so no block can hold more than 16 distinct values; original bf16 or
    fp32 weights have close to 32.
    """
    if weight.numel() % block_size:
        raise ValueError(f"{weight.numel()} weights do not split into blocks of {block_size}.")
    return int(distinct_per_block(weight.detach().float(), block_size).max())


# --------------------------------------------------------------------------- one 4-bit layer


def four_bit_linear(weight: torch.Tensor, quant_type: str = "nf4", double_quant: bool = True,
                    compute_dtype: torch.dtype = torch.float32, device: str | torch.device | None = None):
    """A bitsandbytes `Linear4bit` (no bias) holding `weight` in 4 bits, in eval mode.

    The storage settings (`quant_type`, `double_quant`) decide what is stored;
    `compute_dtype` decides what the matmul runs in. The CPU bf16 shortcut is
    switched off, as in every model the course loads, so a bf16 compute dtype
    really means "dequantize to bf16, then an ordinary bf16 matmul". The layer is
    quantized on `device`, by default `weight`'s own device: a weight taken from a
    model on a GPU gives a layer on that GPU, quantized by bitsandbytes' CUDA kernel
    as the model's own layers were, and its dequantized weight compares with `weight`
    without moving either.
    """
    import bitsandbytes as bnb

    device = weight.device if device is None else device

    out_features, in_features = weight.shape
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=compute_dtype,
                              compress_statistics=double_quant, quant_type=quant_type, device="meta")
    layer.weight = bnb.nn.Params4bit(weight.detach().float().cpu().clone(), requires_grad=False,
                                     compress_statistics=double_quant, quant_type=quant_type)
    layer = layer.to(device)  # quantizes the weight
    if hasattr(layer, "support_avx512bf16_for_cpu"):
        layer.support_avx512bf16_for_cpu = False
    return layer.eval()


def layer_stored_bytes(layer) -> int:
    """Bytes one quantized layer stores: its packed weight plus every constant in its quant_state."""
    return tensor_bytes(layer.weight.data) + sum(tensor_bytes(t) for t in quant_state_tensors(layer.weight).values())


def dequantize_weight(layer) -> torch.Tensor:
    """The fp32 weight a bitsandbytes 4-bit layer (or a PEFT layer wrapping one) multiplies with."""
    import bitsandbytes.functional as bnb_functional

    base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
    return bnb_functional.dequantize_4bit(base.weight.data, base.weight.quant_state).float()


# --------------------------------------------------------------------------- dequantized equivalents


def four_bit_modules(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """(name without PEFT's prefix, module) for every 4-bit linear, LoRA-wrapped or not, each once."""
    import bitsandbytes as bnb

    for name, module in model.named_modules():
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        if isinstance(base, bnb.nn.Linear4bit) and not name.endswith(".base_layer"):
            yield name.removeprefix("base_model.model."), module


def lora_delta(module, adapter_name: str = "default") -> torch.Tensor | None:
    """scaling x B @ A of one PEFT LoRA layer (None when it has no such adapter), in fp32."""
    if adapter_name not in getattr(module, "lora_A", {}):
        return None
    return module.get_delta_weight(adapter_name).float()


def dequantized_equivalent(model4bit: torch.nn.Module, profile: HardwareProfile | None = None,
                           adapter_name: str | None = "default", dtype: torch.dtype | None = None,
                           **load_kwargs):
    """A plain model that computes what `model4bit` (4-bit base, LoRA adapter or not) computes.

    Every 4-bit weight is dequantized once and, where the adapter is attached,
    its update scaling x B @ A is added in fp32: this is merging into a dequantized
    base (lesson 09). Pass adapter_name=None to leave the adapter out (the plain Q(W)
    base). The result is a fresh unquantized model of the same architecture, on the
    profile's device, stored in `dtype` (default: the profile's dtype, as
    `course_utils.models.load_model` chooses: fp32 on a CPU, the 16-bit compute dtype
    on a GPU). The merged weight Q(W) + scaling B A is rounded once, to that dtype:
    pass dtype=torch.float32 for the merge in exact fp32 arithmetic on any machine.
    `load_kwargs` (model_id, local_dir) go to `load_model`: the same model `model4bit`
    was loaded from. On a CPU the result generates many times faster than the 4-bit
    model, which dequantizes every weight again for every new token.
    """
    from .models import load_model

    profile = profile or detect()
    plain = load_model(profile=profile, dtype=dtype, **load_kwargs)
    with torch.no_grad():
        for name, module in four_bit_modules(model4bit):
            weight = dequantize_weight(module)
            delta = lora_delta(module, adapter_name) if adapter_name else None
            if delta is not None:
                weight += delta
            target = plain.get_submodule(name)
            target.weight.copy_(weight.to(target.weight.dtype))
    return plain.eval()


def original_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """name -> weight of every linear layer of an unquantized model (the W that LoftQ compares with)."""
    return {name: module.weight.detach() for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)}


@torch.no_grad()
def relative_weight_error(model4bit: torch.nn.Module, reference: torch.nn.Module) -> float:
    """||Q(W) - W||_F / ||W||_F over every 4-bit linear of `model4bit`, with W from the unquantized `reference`.

    The quantization error of a whole model in one number: it does not depend
    on any text, so two formats compare without sampling noise.
    """
    error = total = 0.0
    for name, module in four_bit_modules(model4bit):
        weight = reference.get_submodule(name).weight.float()
        error += (dequantize_weight(module).to(weight.device) - weight).square().sum().item()
        total += weight.square().sum().item()
    if not total:
        raise ValueError("no 4-bit linear layer found in model4bit.")
    return math.sqrt(error / total)


# --------------------------------------------------------------------------- training runs outside the adapter cache


def cached_run_losses(key: dict, run: Callable[[], tuple[Sequence[float], Sequence[int]]]):
    """Per-question answer losses (`ExampleLosses`) of a run the adapter cache cannot name; computed once.

    `train_lora_adapter` caches adapters by `AdapterSettings`; a run with
    another initialisation (LoftQ) or another base (LoRA on dequantized NF4
    weights) is named here by `key` (a JSON-able dict: its settings and what
    differs) plus the training data's hash, and only its per-question losses
    are kept. `run` trains and scores, returning (sums, counts).
    """
    from .cache import cache_dir, settings_key
    from .compare import cached_example_losses
    from .data import data_path

    task = key.get("task", "sql")
    data = hashlib.sha256(data_path(task, "train").read_bytes()).hexdigest()
    path = cache_dir("runs") / f"{settings_key(dict(key) | {'train_data': data})}.json"
    return cached_example_losses(path, run)


# --------------------------------------------------------------------------- paged optimizers and checkpointing


def paged_tensor_sizes(config, rank: int, targets="all-linear") -> tuple[list[int], list[int]]:
    """(paged, not paged): element counts of the LoRA matrices of `config`, split by bitsandbytes' paging rule.

    A paged optimizer (`paged_adamw_8bit`, `paged_adamw_32bit`) allocates a
    tensor's states in CUDA unified memory only when the tensor has at least
    100,000 elements; smaller ones get ordinary GPU memory.
    """
    from .memory import load_config, model_layout, resolve_targets

    layout = model_layout(load_config(config))
    sizes = []
    for linear in resolve_targets(layout, targets):
        sizes += [rank * linear.in_features, linear.out_features * rank]
    return [n for n in sizes if n >= PAGED_MIN_NUMEL], [n for n in sizes if n < PAGED_MIN_NUMEL]


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of a Llama-style model, PEFT-wrapped or not."""
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and type(module[0]).__name__.endswith("DecoderLayer"):
            return module
    raise ValueError("no decoder layers found (a ModuleList of *DecoderLayer modules).")


def count_layer_calls(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """How many decoder-layer forwards one training step (forward + backward) runs.

    Without gradient checkpointing each layer runs once; with it, backward runs
    each layer's forward again to rebuild the activations it did not keep. We
    count the calls of each layer's attention block with a pre-hook: transformers
    checkpoints a layer's `forward`, inside the layer's own hooks (a hook on the
    layer fires once either way), and PyTorch stops a recomputation as soon as it
    has rebuilt what backward needs (a hook at the end of a module may never fire).
    Gradients are cleared afterwards.
    """
    calls = [0]

    def count(*_):
        calls[0] += 1

    handles = [layer.self_attn.register_forward_pre_hook(count) for layer in decoder_layers(model)]
    try:
        model(**batch).loss.backward()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return calls[0]
