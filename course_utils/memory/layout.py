"""The shapes a planner counts, and the bytes each part takes.

`model_layout(config)` builds the model on the `meta` device (nothing is allocated) and
records every linear layer, norm and bias as transformers builds them; the byte counts
follow what PyTorch, PEFT and bitsandbytes allocate (tests compare them with real models).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Iterable

import torch

from .configs import _config_from_dict, load_config

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEAR_TARGETS = ATTENTION_TARGETS + ("gate_proj", "up_proj", "down_proj")
NAMED_TARGETS = {"attention": ATTENTION_TARGETS, "all-linear": ALL_LINEAR_TARGETS}

# bitsandbytes storage constants (read off bitsandbytes 0.50.2 by lesson 07; tests/test_memory.py
# compares the byte counts built from them with real loaded models).
BLOCKSIZE_4BIT = 64  # one absmax per 64 weights
NESTED_BLOCKSIZE = 256  # double quantization: one fp32 scale per 256 absmax values
CODE_4BIT_ENTRIES = 16  # the fp4 / nf4 table, fp32, one copy per layer
CODE_NESTED_ENTRIES = 256  # the signed dynamic 8-bit map, fp32, one copy per layer
OPTIM_8BIT_MIN_SIZE = 4096  # smaller tensors keep fp32 states in bitsandbytes' 8-bit optimizers
OPTIM_8BIT_BLOCKSIZE = 256  # one fp32 absmax per 256 optimizer-state values
OPTIM_8BIT_QMAPS = 2 * 256 * 4  # the two 256-entry fp32 maps, shared by all parameters

DTYPE_NAMES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


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
        if (not isinstance(targets, (list, tuple, set, frozenset))
                or not all(isinstance(name, str) and name for name in targets)):
            raise ValueError(f"targets must be 'attention', 'all-linear' or a list of module names such as "
                             f"['q_proj', 'v_proj'], got {targets!r}.")
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
    head_weight_copy: int  # autocast's 16-bit copy of a frozen lm_head kept in another dtype (fp32 on a T4)

    @property
    def saved(self) -> int:
        """What autograd holds at the end of the forward pass (without the logits and weight copies)."""
        return self.layers + self.head

    @property
    def total(self) -> int:
        return self.saved + self.weight_casts + self.head_weight_copy + max(self.loss_peak, self.recompute_peak)


def estimate_activations(layout: ModelLayout, targets: tuple[LinearShape, ...], *, method: str, rank: int,
                         batch: int, seq_len: int, gradient_checkpointing: bool, compute_dtype: torch.dtype,
                         residual_dtype: torch.dtype, fp32_trainable_params: int,
                         head_weight_dtype: torch.dtype) -> ActivationEstimate:
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
    The lm_head (or, when tied, the embedding matrix it shares) is frozen in LoRA and QLoRA.
    When it is kept in another dtype than the 16-bit compute dtype (fp32, as
    `prepare_model_for_kbit_training` and the course's `prepare_for_training` leave it on
    an fp16 GPU), autocast casts it to the compute dtype in every forward pass; autocast
    caches casts only of weights that require grad, so this copy is not shared, and the
    matmul saves it to compute the gradient of its input (the hidden states, which carry
    the adapters' gradients): vocab x hidden x b bytes, alive from the forward pass until
    the head's backward, so through the loss peak (1.02 GiB for Qwen2.5-7B in fp16).
    Checkpointing does not help: the head is outside the checkpointed layers. In full FT
    the head trains and its copy is already among the weight casts.
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
    head_weight_copy = (b * layout.vocab_size * layout.hidden_size
                        if method != "full" and b < 4 and head_weight_dtype != compute_dtype else 0)
    return ActivationEstimate(per_layer, layers, head, loss_peak, recompute, weight_casts, head_weight_copy)


def _first_layer_linears(layout: ModelLayout) -> list[LinearShape]:
    """The linears of decoder layer 0 (names like model.layers.0.self_attn.q_proj)."""
    per_layer = len(layout.linears) // layout.num_layers
    return list(layout.linears[:per_layer])
