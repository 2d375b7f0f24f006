"""How much memory will a fine-tune need? A planner that answers before any download.

`plan_memory(config, method="qlora", ...)` predicts, part by part, the bytes a
training step needs on the device, from the model's config alone:

| part            | what it holds                                                           |
|-----------------|-------------------------------------------------------------------------|
| base_weights    | the weight matrices of the decoder's linear layers (q, k, v, o, gate,   |
|                 | up, down), quantized (int8 / fp4 / nf4) or in `weight_dtype`            |
| quant_constants | what bitsandbytes stores next to quantized weights: absmax per block of |
|                 | 64 (fp32, or 8-bit with double quantization plus one fp32 scale per 256 |
|                 | absmax, an fp32 offset and the 256-entry code table), the 16-entry 4-bit |
|                 | code table, int8's fp32 scale per output row                            |
| unquantized     | what bitsandbytes leaves alone: embeddings, lm_head (unless tied to the |
|                 | embeddings), norms, biases, rotary buffers                              |
| adapters        | LoRA A (r x k) and B (d x r) per targeted matrix: r (d + k) fp32 params |
| gradients       | one gradient per trainable parameter, in that parameter's dtype         |
| optimizer       | AdamW: 2 states; fp32 = 8 bytes/param, 8-bit = 2 bytes/param + scales   |
| activations     | what autograd keeps for the backward pass, plus the loss's peak         |
| overhead        | the CUDA context and kernels (0 on the CPU)                             |

Everything is counted from the shapes of the real modules: the config is
instantiated with `AutoModelForCausalLM.from_config` on the `meta` device,
which allocates nothing, so a 70B model is "built" in well under a second and
every linear layer, norm and bias is counted exactly as transformers builds it
(Qwen2's q/k/v biases, OLMo 2's q/k norms, tied embeddings...).

The static parts (weights, constants, adapters, optimizer states) are exact
byte counts of what PyTorch, PEFT and bitsandbytes allocate; the tests compare
them with real loaded models. Activations are an estimate; see
`estimate_activations` for the formula and its assumptions (the tests compare
it with the bytes autograd really saves).

    plan = plan_memory("qwen2.5-7b", "qlora", batch=2, seq_len=512,
                       gradient_checkpointing=True, optimizer="paged_adamw_8bit", profile=T4)
    print(plan)                  # every part in GiB
    print(plan.verdict(T4))      # fits? if not, which changes would make it fit
    plan.replan(seq_len=1024)    # the same plan with one setting changed

`load_config` finds configs by short name (see `SHIPPED_CONFIGS`), file,
folder or cached hub id; `stored_bytes(model)` and
`saved_activation_bytes(model, input_ids)` measure a real model in the same
categories, so a lesson can put prediction and measurement side by side.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .hardware import GIB, HardwareProfile

CONFIG_DIR = Path(__file__).parent / "configs"

# Short names of the configs shipped with the course (course_utils/configs/*.json).
SHIPPED_CONFIGS = {
    "smollm2-135m": "smollm2-135m.json",
    "qwen2.5-1.5b": "qwen2.5-1.5b.json",
    "qwen2.5-7b": "qwen2.5-7b.json",
    "olmo2-7b": "olmo2-7b.json",
    "llama-7b": "llama-7b.json",
    "llama-13b": "llama-13b.json",
    "llama-70b": "llama-70b.json",
}
# Hub ids that map onto a shipped config, so `load_config("Qwen/Qwen2.5-7B-Instruct")` works offline.
HUB_ALIASES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m",
    "Qwen/Qwen2.5-1.5B-Instruct": "qwen2.5-1.5b",
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b",
    "allenai/OLMo-2-1124-7B": "olmo2-7b",
}

METHODS = ("full", "lora", "qlora")
QUANTIZATIONS = (None, "int8", "fp4", "nf4")
# Names as in transformers' TrainingArguments(optim=...), plus short aliases.
OPTIMIZERS = ("adamw_torch", "paged_adamw_32bit", "adamw_8bit", "paged_adamw_8bit", "sgd")
OPTIMIZER_ALIASES = {"adamw": "adamw_torch", "adam": "adamw_torch", "adamw_bnb_8bit": "adamw_8bit"}
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEAR_TARGETS = ATTENTION_TARGETS + ("gate_proj", "up_proj", "down_proj")
NAMED_TARGETS = {"attention": ATTENTION_TARGETS, "all-linear": ALL_LINEAR_TARGETS}

# bitsandbytes storage constants (bitsandbytes 0.50; see FACTS.md and the tests).
BLOCKSIZE_4BIT = 64  # one absmax per 64 weights
NESTED_BLOCKSIZE = 256  # double quantization: one fp32 scale per 256 absmax values
CODE_4BIT_ENTRIES = 16  # the fp4 / nf4 table, fp32, one copy per layer
CODE_NESTED_ENTRIES = 256  # the signed dynamic 8-bit map, fp32, one copy per layer
OPTIM_8BIT_MIN_SIZE = 4096  # smaller tensors keep fp32 states in bitsandbytes' 8-bit optimizers
OPTIM_8BIT_BLOCKSIZE = 256  # one fp32 absmax per 256 optimizer-state values
OPTIM_8BIT_QMAPS = 2 * 256 * 4  # the two 256-entry fp32 maps, shared by all parameters

# The CUDA context, cuBLAS/cuDNN handles and loaded kernels: allocated outside
# PyTorch's caching allocator, so `torch.cuda.max_memory_reserved()` does not
# show it but `nvidia-smi` does. Typically 0.5-1 GiB; we assume the middle.
CUDA_CONTEXT_BYTES = int(0.75 * GIB)

DTYPE_NAMES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}

# Example GPUs for planning without one. memory_gib is what PyTorch reports as
# total memory (a "16 GB" T4 shows 14.7 GiB; a "40 GB" A100 39.4 GiB).
T4 = HardwareProfile("cuda", "Tesla T4 (example)", 14.74, (7, 5), native_bf16=False)
A100_40GB = HardwareProfile("cuda", "A100-SXM4-40GB (example)", 39.39, (8, 0), native_bf16=True)
A100_80GB = HardwareProfile("cuda", "A100-SXM4-80GB (example)", 79.15, (8, 0), native_bf16=True)
EXAMPLE_PROFILES = {"t4": T4, "a100-40gb": A100_40GB, "a100-80gb": A100_80GB}


# --------------------------------------------------------------------------- configs

# The fields the planner reads. A config without them would be filled with the
# architecture's defaults (Llama's are a 7B model): it is refused instead.
REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
OPTIONAL_SIZE_FIELDS = ("num_key_value_heads", "head_dim")


def _config_from_dict(data: Mapping[str, Any], source: str = "The config dict"):
    from transformers import AutoConfig

    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_source" notes etc.
    if "model_type" not in data:
        raise ValueError(f"{source} has no 'model_type' (e.g. 'llama', 'qwen2', 'olmo2'); add it.")
    model_type = data.pop("model_type")
    for name in REQUIRED_FIELDS + OPTIONAL_SIZE_FIELDS:
        if data.get(name) is not None:
            _check_size(name, data[name])  # before transformers divides by it
    try:
        config = AutoConfig.for_model(model_type, **data)
    except ValueError:
        raise
    except Exception as exc:  # e.g. transformers' strict field validation: hidden_size=576.0
        raise ValueError(f"{source} is not a valid {model_type} config: {exc}") from None
    aliases = getattr(config, "attribute_map", {}) or {}  # e.g. GPT-2 calls hidden_size n_embd
    missing = [name for name in REQUIRED_FIELDS if name not in data and aliases.get(name) not in data]
    if missing:
        raise ValueError(
            f"{source} lacks {', '.join(missing)}: the planner needs {', '.join(REQUIRED_FIELDS)} "
            f"and never fills them with {model_type}'s defaults (which describe some other model). "
            "Copy them from the model's config.json, or pass a shipped name such as 'qwen2.5-7b'."
        )
    return config


def _check_sizes(config) -> None:
    """Every size the planner multiplies must be a positive integer; say which one is not."""
    for name in REQUIRED_FIELDS + OPTIONAL_SIZE_FIELDS:
        value = getattr(config, name, None)
        if value is not None or name in REQUIRED_FIELDS:
            _check_size(name, value)


def _check_size(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Config field {name} must be a positive integer, got {value!r}; "
                         f"check the config (the tiny model has {name} = {_TINY_SIZES[name]}).")


_TINY_SIZES = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "intermediate_size": 1536,
               "vocab_size": 49152, "num_key_value_heads": 3, "head_dim": 64}


def load_config(name_or_path: Any):
    """A transformers config from a short name, a JSON file, a folder or a cached hub id.

    Accepts a transformers config object (returned unchanged), a dict, one of
    the short names in `SHIPPED_CONFIGS` ("qwen2.5-7b", "llama-70b", ...), a
    path to a config.json-style file, a folder holding config.json, or a hub
    id that is already in the local hub cache (nothing is downloaded). Hub ids
    of the shipped models resolve to the shipped files.
    """
    config = _load_config(name_or_path)
    _check_sizes(config)
    return config


def _load_config(name_or_path: Any):
    from transformers import PretrainedConfig

    if isinstance(name_or_path, PretrainedConfig):
        return name_or_path
    if isinstance(name_or_path, Mapping):
        return _config_from_dict(name_or_path)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"load_config needs a name, a path, a dict or a transformers config, not {type(name_or_path).__name__}.")
    name = str(name_or_path)
    short = HUB_ALIASES.get(name, name.lower())
    if short in SHIPPED_CONFIGS:
        path = CONFIG_DIR / SHIPPED_CONFIGS[short]
        return _config_from_dict(json.loads(path.read_text()), str(path))
    path = Path(name).expanduser()
    if path.is_file():
        return _config_from_dict(_read_json(path), str(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json; pass the folder of a transformers model.")
        return _config_from_dict(_read_json(path / "config.json"), str(path / "config.json"))
    if "/" in name:
        try:
            from huggingface_hub import hf_hub_download

            cached = hf_hub_download(name, "config.json", local_files_only=True)
        except Exception:
            cached = None
        if cached is not None:
            return _config_from_dict(_read_json(Path(cached)), f"{name}'s cached config.json")
    raise ValueError(
        f"Unknown model {name!r}: not a shipped config, a file, a folder or a hub id in the local cache. "
        f"Shipped names: {', '.join(SHIPPED_CONFIGS)}. Or pass a transformers config, a dict, or a path to config.json."
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable JSON config ({exc}); pass a model's config.json.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object; pass a model's config.json.")
    return data


# --------------------------------------------------------------------------- shapes

@dataclass(frozen=True)
class LinearShape:
    """One nn.Linear: its module name, weight shape (out x in) and whether it has a bias."""

    name: str
    in_features: int
    out_features: int
    bias: bool

    @property
    def suffix(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ModelLayout:
    """Every tensor the model holds, grouped the way quantization treats them.

    `linears` are the decoder's linear layers, the ones bitsandbytes quantizes
    (transformers keeps lm_head in 16 bits). `other_params` counts everything
    else that is a parameter: embeddings, lm_head unless tied, norms, biases.
    """

    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    linears: tuple[LinearShape, ...]
    embedding_params: int
    lm_head_params: int  # 0 when tied to the embeddings
    other_params: int  # all parameters outside `linears` weights (embeddings, lm_head, norms, biases)
    buffer_bytes: int  # rotary inv_freq etc., kept in fp32
    layer_norm_widths: tuple[int, ...]  # widths of the RMSNorms inside one decoder layer
    other_tensors: tuple[int, ...]  # element counts of the `other_params` tensors (optimizer states are per tensor)
    pre_norm: bool  # layers start with a norm (Llama, Qwen2); OLMo 2 normalises after attention and MLP

    @property
    def linear_weight_params(self) -> int:
        return sum(layer.weight_params for layer in self.linears)

    @property
    def total_params(self) -> int:
        return self.linear_weight_params + self.other_params

    @property
    def linear_suffixes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layer.suffix for layer in self.linears))


def _config_key(config) -> str:
    data = config.to_dict()
    data.pop("quantization_config", None)  # shapes only: a loaded model's quantization is planned separately
    return json.dumps(data, sort_keys=True, default=str)


@functools.lru_cache(maxsize=32)
def _layout_from_key(key: str) -> ModelLayout:
    from transformers import AutoModelForCausalLM

    config = _config_from_dict(json.loads(key))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)  # shapes only: meta tensors hold no data
    output = model.get_output_embeddings()
    embeddings = model.get_input_embeddings()
    tied = output is not None and output.weight is embeddings.weight
    linears = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            linears.append(LinearShape(name, module.in_features, module.out_features, module.bias is not None))
    linear_weight_ids = {id(model.get_submodule(lin.name).weight) for lin in linears}
    seen: set[int] = set()
    total = 0
    other_tensors = []
    for param in model.parameters():  # parameters() already skips the tied duplicate
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
            if id(param) not in linear_weight_ids:
                other_tensors.append(param.numel())
    linear_weights = sum(layer.weight_params for layer in linears)
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    layers = _decoder_layers(model)
    norm_widths = tuple(
        m.weight.numel() for m in layers[0].modules()
        if type(m).__name__.endswith("RMSNorm") and getattr(m, "weight", None) is not None
    )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return ModelLayout(
        model_type=config.model_type,
        num_layers=len(layers),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=head_dim,
        vocab_size=config.vocab_size,
        tied_embeddings=tied,
        linears=tuple(linears),
        embedding_params=embeddings.weight.numel(),
        lm_head_params=0 if tied or output is None else output.weight.numel(),
        other_params=total - linear_weights,
        buffer_bytes=buffer_bytes,
        layer_norm_widths=norm_widths,
        other_tensors=tuple(other_tensors),
        pre_norm=hasattr(layers[0], "input_layernorm"),
    )


def _decoder_layers(model) -> torch.nn.ModuleList:
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            return module
    raise ValueError(f"{type(model).__name__} has no list of decoder layers; the planner supports decoder-only LMs.")


def model_layout(config) -> ModelLayout:
    """The exact tensor shapes of a model, from its config (built on the meta device)."""
    return _layout_from_key(_config_key(load_config(config)))


def resolve_targets(layout: ModelLayout, targets: str | Iterable[str]) -> tuple[LinearShape, ...]:
    """The linear layers LoRA wraps: "attention", "all-linear", or module-name suffixes."""
    if isinstance(targets, str):
        if targets not in NAMED_TARGETS:
            raise ValueError(
                f"Unknown target set {targets!r}: use 'attention', 'all-linear', or a list of module names "
                f"from {list(layout.linear_suffixes)}."
            )
        wanted = set(NAMED_TARGETS[targets])
    else:
        wanted = set(targets)
        if not wanted:
            raise ValueError("targets is empty: name at least one module, e.g. ['q_proj', 'v_proj'].")
    unknown = sorted(wanted - set(layout.linear_suffixes))
    if unknown and not (isinstance(targets, str) and wanted & set(layout.linear_suffixes)):
        raise ValueError(
            f"Unknown target module(s) {unknown} for a {layout.model_type} model: "
            f"valid names are {list(layout.linear_suffixes)}, or 'attention' / 'all-linear'."
        )
    return tuple(layer for layer in layout.linears if layer.suffix in wanted)


# --------------------------------------------------------------------------- byte counts

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _dtype(value: torch.dtype | str | None, default: torch.dtype, label: str = "dtype") -> torch.dtype:
    if value is None:
        return default
    if isinstance(value, str) and value.lower() in DTYPE_NAMES:
        return DTYPE_NAMES[value.lower()]
    if isinstance(value, torch.dtype) and value in FLOAT_DTYPES:
        return value
    raise ValueError(f"Unknown {label} {value!r}: use torch.float32, torch.float16, torch.bfloat16 or "
                     "'fp32'/'fp16'/'bf16' (the profile picks fp32 on a CPU, fp16 on a T4, bf16 on Ampere and newer).")


def _bytes_per(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def quantized_linear_bytes(weight_params: int, out_features: int, quantization: str,
                           double_quant: bool) -> tuple[int, int]:
    """(weight bytes, constant bytes) bitsandbytes stores for one linear weight.

    int8 (LLM.int8): one int8 per weight, one fp32 scale per output row.
    4-bit: two codes per byte; one absmax per block of 64 weights, fp32, plus
    the 16-entry fp32 code table. With double quantization the absmax values
    are stored as 8-bit codes, with one fp32 scale per 256 of them, an fp32
    offset (their mean) and the 256-entry fp32 dynamic map they index.
    """
    if quantization == "int8":
        return weight_params, 4 * out_features
    weights = math.ceil(weight_params / 2)
    blocks = math.ceil(weight_params / BLOCKSIZE_4BIT)
    code = 4 * CODE_4BIT_ENTRIES
    if not double_quant:
        return weights, 4 * blocks + code
    nested_blocks = math.ceil(blocks / NESTED_BLOCKSIZE)
    return weights, blocks + 4 * nested_blocks + 4 + 4 * CODE_NESTED_ENTRIES + code


def optimizer_state_bytes(optimizer: str, trainable: Iterable[tuple[int, int]]) -> int:
    """Bytes of optimizer state for trainable tensors given as (numel, bytes per element).

    AdamW keeps two moments in the parameter's dtype. bitsandbytes' 8-bit
    AdamW keeps them as uint8 with one fp32 absmax per 256 values, but tensors
    under 4096 elements keep fp32 moments. Paged variants hold the same bytes
    in unified memory, which the driver may move to the CPU under pressure.
    """
    total = 0
    any_8bit = False
    for numel, element_size in trainable:
        if optimizer == "sgd":
            continue
        if optimizer in ("adamw_torch", "paged_adamw_32bit"):
            total += 2 * numel * element_size
        elif numel < OPTIM_8BIT_MIN_SIZE:
            total += 2 * numel * 4
        else:
            any_8bit = True
            total += 2 * numel + 2 * 4 * math.ceil(numel / OPTIM_8BIT_BLOCKSIZE)
    return total + (OPTIM_8BIT_QMAPS if any_8bit else 0)


@dataclass(frozen=True)
class ActivationEstimate:
    """Bytes of activations, part by part (whole batch)."""

    per_layer: int  # what autograd saves inside one decoder layer
    layers: int  # saved by all layers (or only the checkpointed layer inputs)
    head: int  # final norm and the log-softmax output saved for the loss
    loss_peak: int  # logits plus the loss's backward buffers, live at the start of backward
    recompute_peak: int  # checkpointing: one layer recomputed in backward (0 without)
    weight_casts: int  # autocast's 16-bit copies of fp32 trainable weights

    @property
    def saved(self) -> int:
        """What autograd holds at the end of the forward pass (without the logits)."""
        return self.layers + self.head

    @property
    def total(self) -> int:
        return self.saved + self.weight_casts + max(self.loss_peak, self.recompute_peak)


def estimate_activations(layout: ModelLayout, targets: tuple[LinearShape, ...], *, method: str, rank: int,
                         batch: int, seq_len: int, gradient_checkpointing: bool, compute_dtype: torch.dtype,
                         residual_dtype: torch.dtype, fp32_trainable_params: int) -> ActivationEstimate:
    """Activation memory of one training step of a Llama-style decoder.

    Per token and per decoder layer, with b the compute dtype's bytes, autograd saves:
      - every RMSNorm: an fp32 copy of its input (4 x width bytes; HF norms upcast) and its 1/rms;
      - attention (SDPA / flash kernels, so no seq x seq matrix): rotated q and k, v,
        the output, and an fp32 log-sum-exp per head: b (2 q_dim + 2 kv_dim) + 4 heads;
      - SwiGLU MLP: gate, silu(gate) and up: 3 b x intermediate;
      - the input of every linear whose weight trains (LoRA A, or every linear in full FT),
        and LoRA A's r outputs. In fp32 compute, q/k/v share one input tensor, gate/up
        another, and o_proj reads the attention output that is saved anyway; in 16-bit
        compute every module makes its own cast copy (PEFT casts inputs to the fp32
        adapter's dtype, autocast casts them back);
      - full FT also saves each norm's normalized output, for the norm weight's gradient.
    With gradient checkpointing a layer keeps only its input (residual dtype x hidden);
    in backward one layer at a time is recomputed, so one layer's activations are back briefly.
    (Layer 0's first norm is the exception: with frozen embeddings nothing before it
    trains, so LoRA without checkpointing does not save its input.)
    The head saves the final norm's fp32 input, the fp32 log-softmax of the logits
    (4 x vocab per token), the labels and the rotary cos/sin. At the start of backward
    the logits (b x vocab) and two fp32 gradient buffers of the same size are alive
    too: (b + 8) x vocab per token more, usually the largest single term for big
    vocabularies (fused or chunked cross-entropy kernels, as in Unsloth, avoid most of it).
    16-bit compute is assumed to run under autocast (the Trainer's fp16=True / bf16=True);
    a loop without autocast saves PEFT's fp32 input casts instead, 4 x in_features per
    targeted module and token.
    Under 16-bit compute autocast also keeps a 16-bit copy of each fp32 weight that
    trains (the adapters; every weight in full FT) until backward.
    Not counted: dropout masks (LoRA dropout adds about in_features x (b + 1) bytes per
    targeted module and token), eager attention's batch x heads x seq^2 scores,
    allocator fragmentation. The total adds the larger of the loss peak and the
    recompute peak to what is saved, a slight overestimate when checkpointing.
    """
    tokens = batch * seq_len
    b = _bytes_per(compute_dtype)
    h, i = layout.hidden_size, layout.intermediate_size
    q_dim, kv_dim = layout.num_heads * layout.head_dim, layout.num_kv_heads * layout.head_dim
    per_token = sum(4 * width + 4 for width in layout.layer_norm_widths)
    per_token += b * (2 * q_dim + 2 * kv_dim) + 4 * layout.num_heads + 3 * b * i
    one_layer = _first_layer_linears(layout)
    if method == "full":
        trained = one_layer
        per_token += b * sum(layout.layer_norm_widths)
    else:
        suffixes = {lin.suffix for lin in targets}
        trained = [lin for lin in one_layer if lin.suffix in suffixes]
        per_token += (4 if b == 4 else b) * rank * len(trained)  # LoRA A outputs, read by B
    if b == 4:  # no casts: modules that read the same tensor share it
        sources = {"q_proj": "attention input", "k_proj": "attention input", "v_proj": "attention input",
                   "o_proj": None, "gate_proj": "mlp input", "up_proj": "mlp input"}
        inputs = {sources.get(lin.suffix, lin.suffix): lin.in_features for lin in trained}
        inputs.pop(None, None)
        per_token += 4 * sum(inputs.values())
    else:
        per_token += b * sum(lin.in_features for lin in trained)
    per_layer = tokens * per_token
    if gradient_checkpointing:
        layers = layout.num_layers * tokens * _bytes_per(residual_dtype) * h
        recompute = per_layer
    else:
        layers = layout.num_layers * per_layer
        recompute = 0
        if method != "full" and layout.pre_norm:
            # Nothing before layer 0's first norm trains (frozen embeddings), so autograd skips its input.
            layers -= tokens * (4 * layout.layer_norm_widths[0] + 4)
    # Final norm's fp32 input and 1/rms, the fp32 log-softmax, the int64 labels, and rotary cos/sin
    # (one seq_len x head_dim pair for the whole batch, in the residual dtype).
    head = tokens * (4 * h + 4 + 4 * layout.vocab_size + 8) + seq_len * 2 * layout.head_dim * _bytes_per(residual_dtype)
    if method == "full":  # the final norm's weight and lm_head train: normalized output and lm_head input; embedding indices
        head += tokens * (2 * b * h + 8)
    loss_peak = tokens * (b + 8) * layout.vocab_size
    weight_casts = b * fp32_trainable_params if b < 4 else 0
    return ActivationEstimate(per_layer, layers, head, loss_peak, recompute, weight_casts)


def _first_layer_linears(layout: ModelLayout) -> list[LinearShape]:
    """The linears of decoder layer 0 (names like model.layers.0.self_attn.q_proj)."""
    per_layer = len(layout.linears) // layout.num_layers
    return list(layout.linears[:per_layer])


# --------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class PlanSettings:
    """Everything `plan_memory` was asked, after defaults were filled in."""

    method: str
    rank: int
    targets: tuple[str, ...]
    batch: int
    seq_len: int
    gradient_checkpointing: bool
    optimizer: str
    quantization: str | None
    double_quant: bool
    compute_dtype: torch.dtype
    weight_dtype: torch.dtype  # unquantized linear weights
    unquantized_dtype: torch.dtype  # embeddings, lm_head, norms, biases
    device: str

    def describe(self) -> str:
        dtype = str(self.compute_dtype).removeprefix("torch.")
        quant = self.quantization or str(self.weight_dtype).removeprefix("torch.")
        if self.quantization and self.double_quant:
            quant += "+DQ"
        parts = [self.method, f"base {quant}", f"compute {dtype}"]
        if self.method != "full":
            parts.append(f"r={self.rank} on {'/'.join(t.removesuffix('_proj') for t in self.targets)}")
        parts += [f"batch {self.batch} x seq {self.seq_len}",
                  "grad checkpointing" if self.gradient_checkpointing else "no checkpointing",
                  self.optimizer, self.device]
        return ", ".join(parts)


PART_NAMES = ("base_weights", "quant_constants", "unquantized", "adapters", "gradients", "optimizer",
              "activations", "overhead")
PART_LABELS = {
    "base_weights": "base weights (decoder linears)",
    "quant_constants": "quantization constants",
    "unquantized": "unquantized (embed, head, norms)",
    "adapters": "LoRA adapters",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "activations": "activations",
    "overhead": "CUDA context (overhead)",
}


@dataclass(frozen=True)
class MemoryPlan:
    """Predicted device memory of one training step, in bytes, part by part."""

    model: str
    settings: PlanSettings
    layout: ModelLayout = field(repr=False)
    base_weights: int
    quant_constants: int
    unquantized: int
    adapters: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    activation_detail: ActivationEstimate = field(repr=False)
    total_params: int
    trainable_params: int
    notes: tuple[str, ...] = ()
    config: Any = field(default=None, repr=False, compare=False)

    @property
    def parts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in PART_NAMES}

    @property
    def static(self) -> int:
        """What the loaded model (and adapters) occupy before training starts."""
        return self.base_weights + self.quant_constants + self.unquantized + self.adapters

    @property
    def model_bytes(self) -> int:
        """The loaded base model alone: weights, quantization constants, unquantized parts."""
        return self.base_weights + self.quant_constants + self.unquantized

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def fits(self, device_bytes: int | float) -> bool:
        """True when the whole plan fits in `device_bytes`."""
        return self.total <= device_bytes

    def summary(self) -> str:
        """A table of every part in GiB, for printing in a notebook."""
        width = max(len(label) for label in PART_LABELS.values())
        lines = [f"{self.model}: {self.settings.describe()}",
                 f"params: {self.total_params / 1e9:.3f} B total, {self.trainable_params / 1e6:.2f} M trainable"]
        for name, value in self.parts.items():
            share = 100 * value / self.total if self.total else 0.0
            lines.append(f"  {PART_LABELS[name]:<{width}} {value / GIB:9.3f} GiB  {share:5.1f}%")
        lines.append(f"  {'total':<{width}} {self.total / GIB:9.3f} GiB")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def replan(self, **changes) -> "MemoryPlan":
        """The same plan with some settings changed, e.g. `plan.replan(seq_len=256)`.

        Changing `method` re-derives the quantization and dtypes from the new
        method; changing `compute_dtype` re-derives the weight dtypes; pass
        them explicitly to keep them.
        """
        s = self.settings
        kwargs: dict[str, Any] = dict(
            method=s.method, rank=s.rank, targets=s.targets or "all-linear", batch=s.batch, seq_len=s.seq_len,
            gradient_checkpointing=s.gradient_checkpointing, optimizer=s.optimizer,
            compute_dtype=s.compute_dtype, device=s.device)
        if "method" not in changes:
            kwargs.update(quantization=s.quantization, double_quant=s.double_quant)
            if "compute_dtype" not in changes:
                kwargs.update(weight_dtype=s.weight_dtype, unquantized_dtype=s.unquantized_dtype)
        kwargs.update(changes)
        return plan_memory(self.config, name=self.model, **kwargs)

    def verdict(self, profile: HardwareProfile) -> "Verdict":
        """Does this plan fit `profile`'s device, and if not, what would?"""
        return verdict(self, profile)

    fits_on = verdict


def plan_memory(
    config: Any,
    method: str = "qlora",
    *,
    rank: int = 16,
    targets: str | Iterable[str] = "all-linear",
    batch: int = 1,
    seq_len: int = 512,
    gradient_checkpointing: bool = False,
    optimizer: str = "adamw_torch",
    quantization: str | None = "auto",
    double_quant: bool | None = None,
    compute_dtype: torch.dtype | str | None = None,
    weight_dtype: torch.dtype | str | None = None,
    unquantized_dtype: torch.dtype | str | None = None,
    device: str | None = None,
    profile: HardwareProfile | None = None,
    name: str | None = None,
) -> MemoryPlan:
    """Predict the memory of fine-tuning `config` with full FT, LoRA or QLoRA.

    config: a transformers config, a dict, a shipped short name ("qwen2.5-7b")
        or anything `load_config` accepts. Nothing is downloaded.
    method: "full" (every weight trains), "lora" (frozen base in `weight_dtype`,
        or quantized if `quantization` is given), "qlora" (LoRA on a 4-bit base:
        nf4 with double quantization unless told otherwise).
    rank, targets: LoRA rank and modules ("attention", "all-linear", or suffixes).
    batch, seq_len: tokens per step = batch x seq_len (per device, per micro-batch).
    optimizer: "adamw_torch", "paged_adamw_32bit", "adamw_8bit", "paged_adamw_8bit" or "sgd".
    quantization: None, "int8", "fp4", "nf4"; "auto" = nf4 for qlora, None otherwise.
    compute_dtype: the matmul dtype; default from `profile` (fp32 CPU, fp16 T4,
        bf16 Ampere+), else bf16.
    weight_dtype: dtype of unquantized linear weights; default fp32 for full FT
        (mixed precision keeps fp32 master weights), else the compute dtype.
    unquantized_dtype: dtype of embeddings, lm_head, norms and biases; default
        the weight dtype. `peft.prepare_model_for_kbit_training` upcasts them to
        fp32: pass torch.float32 to plan for that.
    device: "cuda" or "cpu" (decides the CUDA-context overhead); default from `profile`, else "cuda".
    """
    settings = _check_settings(method, rank, batch, seq_len, gradient_checkpointing, optimizer, quantization,
                               double_quant, compute_dtype, weight_dtype, unquantized_dtype, device, profile)
    if name is None and isinstance(config, str):
        name = config
    config = load_config(config)
    layout = model_layout(config)
    target_layers = resolve_targets(layout, targets) if settings.method != "full" else ()
    if settings.method != "full":
        too_big = [lin.name for lin in target_layers if settings.rank > min(lin.in_features, lin.out_features)]
        if too_big:
            smallest = min(min(lin.in_features, lin.out_features) for lin in target_layers)
            raise ValueError(f"rank={settings.rank} exceeds min(d, k) = {smallest} of {too_big[0]}: "
                             f"a rank above the matrix's smaller side adds nothing; use rank <= {smallest}.")
    settings = replace(settings, targets=tuple(dict.fromkeys(lin.suffix for lin in target_layers)))

    weight_bytes = _bytes_per(settings.weight_dtype)
    other_bytes = _bytes_per(settings.unquantized_dtype)
    base = constants = 0
    for lin in layout.linears:
        if settings.quantization is None:
            base += lin.weight_params * weight_bytes
        else:
            w, c = quantized_linear_bytes(lin.weight_params, lin.out_features, settings.quantization,
                                          settings.double_quant)
            base += w
            constants += c
    unquantized = layout.other_params * other_bytes + layout.buffer_bytes

    if settings.method == "full":
        adapters = 0
        trainable = [(lin.weight_params, weight_bytes) for lin in layout.linears]
        trainable += [(n, other_bytes) for n in layout.other_tensors]
        fp32_trainable = sum(n for n, size in trainable if size == 4)
    else:
        trainable = []
        for lin in target_layers:
            trainable += [(settings.rank * lin.in_features, 4), (lin.out_features * settings.rank, 4)]
        adapters = sum(n * size for n, size in trainable)
        fp32_trainable = sum(n for n, _ in trainable)
    gradients = sum(n * size for n, size in trainable)
    optimizer_bytes = optimizer_state_bytes(settings.optimizer, trainable)
    residual_dtype = settings.unquantized_dtype
    acts = estimate_activations(layout, target_layers, method=settings.method, rank=settings.rank,
                                batch=settings.batch, seq_len=settings.seq_len,
                                gradient_checkpointing=settings.gradient_checkpointing,
                                compute_dtype=settings.compute_dtype, residual_dtype=residual_dtype,
                                fp32_trainable_params=fp32_trainable)
    notes = []
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and settings.seq_len > max_positions:
        notes.append(f"seq_len {settings.seq_len} exceeds the model's max_position_embeddings {max_positions}.")
    if settings.optimizer.startswith("paged") and settings.device == "cuda":
        notes.append("paged optimizer states live in unified memory: under pressure the driver moves them to CPU RAM.")
    return MemoryPlan(
        model=name or getattr(config, "_name_or_path", "") or layout.model_type,
        settings=settings, layout=layout,
        base_weights=base, quant_constants=constants, unquantized=unquantized, adapters=adapters,
        gradients=gradients, optimizer=optimizer_bytes, activations=acts.total,
        overhead=CUDA_CONTEXT_BYTES if settings.device == "cuda" else 0,
        activation_detail=acts, total_params=layout.total_params,
        trainable_params=sum(n for n, _ in trainable), notes=tuple(notes), config=config,
    )


def _check_settings(method, rank, batch, seq_len, gradient_checkpointing, optimizer, quantization, double_quant, compute_dtype,
                    weight_dtype, unquantized_dtype, device, profile) -> PlanSettings:
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: choose one of {METHODS}.")
    for label, value in (("batch", batch), ("seq_len", seq_len), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{label} must be a positive integer, got {value!r}.")
    if not isinstance(gradient_checkpointing, bool):
        raise ValueError(f"gradient_checkpointing must be True or False, got {gradient_checkpointing!r} "
                         f"({type(gradient_checkpointing).__name__}); True trades ~30% more compute for far less "
                         "activation memory.")
    if double_quant is not None and not isinstance(double_quant, bool):
        raise ValueError(f"double_quant must be True, False or None (None: on for QLoRA), got {double_quant!r}.")
    if method != "full" and rank <= 0:
        raise ValueError(f"rank must be a positive integer (try 8 or 16), got {rank}.")
    if batch <= 0:
        raise ValueError(f"batch must be at least 1 (use gradient accumulation for larger effective batches), got {batch}.")
    if seq_len <= 0:
        raise ValueError(f"seq_len must be at least 1 token, got {seq_len}.")
    optimizer = OPTIMIZER_ALIASES.get(optimizer, optimizer)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}: choose one of {OPTIMIZERS}.")
    if quantization == "auto":
        quantization = "nf4" if method == "qlora" else None
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantization!r}: choose one of {QUANTIZATIONS}.")
    if method == "full" and quantization is not None:
        raise ValueError("Full fine-tuning updates every weight, which cannot stay quantized: "
                         "use quantization=None, or method='qlora' to train adapters on a quantized base.")
    if method == "qlora" and quantization not in ("nf4", "fp4"):
        raise ValueError(f"QLoRA needs a 4-bit base (quantization='nf4' or 'fp4'), not {quantization!r}; "
                         "for LoRA on an int8 or 16-bit base use method='lora'.")
    if double_quant is None:
        double_quant = method == "qlora"
    if double_quant and quantization not in ("nf4", "fp4"):
        raise ValueError(f"double_quant applies to 4-bit formats only (fp4, nf4), not {quantization!r}; drop it.")
    if device is None:
        device = profile.device if profile is not None else "cuda"
    if device not in ("cuda", "cpu", "mps"):
        raise ValueError(f"Unknown device {device!r}: use 'cuda', 'cpu' or 'mps'.")
    default_compute = profile.compute_dtype if profile is not None else torch.bfloat16
    compute = _dtype(compute_dtype, default_compute, "compute_dtype")
    weights = _dtype(weight_dtype, torch.float32 if method == "full" else compute, "weight_dtype")
    other = _dtype(unquantized_dtype, weights if quantization is None else compute, "unquantized_dtype")
    return PlanSettings(method, rank, (), batch, seq_len, bool(gradient_checkpointing), optimizer, quantization,
                        bool(double_quant), compute, weights, other, device)


# --------------------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class Suggestion:
    change: str  # in words
    settings: dict[str, Any]  # keyword arguments for plan.replan
    total: int
    fits: bool


@dataclass(frozen=True)
class Verdict:
    """Whether a plan fits a device, and which changes would make it fit."""

    fits: bool
    plan: MemoryPlan
    available: int  # bytes on the device
    suggestions: tuple[Suggestion, ...]  # each change alone, largest saving first
    recipe: Suggestion | None  # cheap changes combined, in order, until it fits (None: nothing needed or nothing works)

    @property
    def headroom(self) -> int:
        return self.available - self.plan.total

    def __str__(self) -> str:
        need, have = self.plan.total / GIB, self.available / GIB
        if self.fits:
            return f"fits: needs {need:.2f} GiB of {have:.2f} GiB ({self.headroom / GIB:.2f} GiB to spare)."
        lines = [f"does not fit: needs {need:.2f} GiB, the device has {have:.2f} GiB. Each change alone:"]
        for s in self.suggestions:
            lines.append(f"  - {s.change}: {s.total / GIB:.2f} GiB{' (fits)' if s.fits else ''}")
        if self.recipe is not None and self.recipe.fits:
            lines.append(f"Together: {self.recipe.change} -> {self.recipe.total / GIB:.2f} GiB, fits.")
        else:
            lines.append("Even all of these together do not fit: choose a smaller model.")
        return "\n".join(lines)


def verdict(plan: MemoryPlan, profile: HardwareProfile) -> Verdict:
    """Judge `plan` on `profile`'s device; if it does not fit, say what would.

    The plan is first re-made with the profile's device and compute dtype (a T4
    computes in fp16, a CPU in fp32). Candidate changes, in order of
    preference (the first ones do not change what the model learns):
    gradient checkpointing, batch 1 with gradient accumulation, a paged 8-bit
    optimizer, QLoRA, shorter sequences, rank 8. Each is tried alone; the
    recipe adds them in that order until the plan fits, then drops any that
    turned out unnecessary. If all of them together still do not fit, the
    model is too big for the device.
    """
    if (plan.settings.device, plan.settings.compute_dtype) != (profile.device, profile.compute_dtype):
        plan = plan.replan(device=profile.device, compute_dtype=profile.compute_dtype)
    available = int(profile.memory_gib * GIB)
    if plan.fits(available):
        return Verdict(True, plan, available, (), None)
    s = plan.settings
    # In order of preference: changes that leave the training result alone come first.
    steps: list[tuple[str, dict]] = []
    if not s.gradient_checkpointing:
        steps.append(("turn on gradient checkpointing", {"gradient_checkpointing": True}))
    if s.batch > 1:
        steps.append((f"batch 1 (gradient accumulation {s.batch} keeps the effective batch)", {"batch": 1}))
    if s.optimizer in ("adamw_torch", "paged_adamw_32bit"):
        steps.append(("use optimizer='paged_adamw_8bit'", {"optimizer": "paged_adamw_8bit"}))
    if s.method != "qlora":
        steps.append(("switch to QLoRA (nf4 + DQ base)",
                      {"method": "qlora", "targets": s.targets or ALL_LINEAR_TARGETS}))
    if s.seq_len > 128:
        shorter = max(128, s.seq_len // 4)
        steps.append((f"shorter sequences (seq_len={shorter})", {"seq_len": shorter}))
    if s.method != "full" and s.rank > 8:
        steps.append(("smaller rank (8)", {"rank": 8}))
    alone = []
    for change, kwargs in steps:
        total = plan.replan(**kwargs).total
        alone.append(Suggestion(change, kwargs, total, total <= available))
    alone.sort(key=lambda sug: sug.total)

    def combine(chosen: list[tuple[str, dict]]) -> Suggestion:
        settings = {k: v for _, kwargs in chosen for k, v in kwargs.items()}
        total = plan.replan(**settings).total
        return Suggestion(" + ".join(change for change, _ in chosen), settings, total, total <= available)

    chosen: list[tuple[str, dict]] = []
    recipe = None
    for step in steps:  # add changes in order of preference until it fits ...
        chosen.append(step)
        recipe = combine(chosen)
        if recipe.fits:
            break
    if recipe is not None and recipe.fits:  # ... then drop any that turned out not to be needed
        for step in reversed(list(chosen)):  # least preferred first
            fewer = [other for other in chosen if other is not step]
            if fewer and combine(fewer).fits:
                chosen = fewer
        recipe = combine(chosen)
    return Verdict(False, plan, available, tuple(alone), recipe)


# --------------------------------------------------------------------------- measuring real models

def stored_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes a loaded model really holds, in the planner's categories.

    "base_weights": weights of the decoder's linear layers (packed 4-bit,
    int8, or plain); "quant_constants": bitsandbytes' absmax, nested absmax,
    offsets, code tables and int8 row scales (tensors that `parameters()` and
    `get_memory_footprint()` do not see); "unquantized": all other parameters
    and buffers. Tensors sharing storage (tied embeddings) count once.
    """
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear_weights = {id(m.weight) for m in model.modules()
                      if isinstance(m, torch.nn.Linear) and m is not output and m.weight is not None}
    seen: set[int] = set()
    parts = {"base_weights": 0, "quant_constants": 0, "unquantized": 0}

    def add(part: str, tensor: torch.Tensor | None) -> None:
        if tensor is None or not isinstance(tensor, torch.Tensor):
            return
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            return
        seen.add(ptr)
        parts[part] += tensor.numel() * tensor.element_size()

    for param in model.parameters():
        add("base_weights" if id(param) in linear_weights else "unquantized", param)
        state = getattr(param, "quant_state", None)
        while state is not None:  # 4-bit: absmax, code, offset, then the nested state
            for tensor in (state.absmax, state.code, getattr(state, "offset", None)):
                add("quant_constants", tensor)
            state = getattr(state, "state2", None)
        add("quant_constants", getattr(param, "SCB", None))  # int8 row scales
    for buffer in model.buffers():
        add("unquantized", buffer)
    return parts


def saved_activation_bytes(model: torch.nn.Module, input_ids: torch.Tensor,
                           autocast_dtype: torch.dtype | None = None) -> int:
    """Bytes autograd saves for backward in one forward pass with labels = input_ids.

    Counts each storage once and leaves out the model's own parameters and
    buffers, so it measures exactly the "saved" part of `ActivationEstimate`
    (plus autocast's weight copies). It does not see tensors that are merely
    alive (the returned logits) nor the transient buffers of backward.
    """
    own = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    device_type = input_ids.device.type
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            model(input_ids=input_ids, labels=input_ids)
    return sum(saved.values())
