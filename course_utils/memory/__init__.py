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
| activations     | what autograd keeps for the backward pass, plus the loss's peak; under  |
|                 | 16-bit autocast also the 16-bit copies of fp32 weights it saves: of     |
|                 | the trained weights, and of a frozen fp32 lm_head (listed on its own)   |
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

The package is split by concern: `configs` (finding a config), `layout` (shapes and byte
counts), `plan` (`plan_memory`, `MemoryPlan`), `verdicts` (does it fit, what would),
`measure` (the same categories measured on a real model). Everything is importable from
`course_utils.memory`. The example GPUs (`T4`, `A100_40GB`, `A100_80GB`) live with the
hardware profile in `course_utils.hardware`.
"""

from ..hardware import A100_40GB, A100_80GB, EXAMPLE_PROFILES, T4  # noqa: F401
from .configs import CONFIG_DIR, HUB_ALIASES, REQUIRED_FIELDS, SHIPPED_CONFIGS, load_config  # noqa: F401
from .layout import (ALL_LINEAR_TARGETS, ATTENTION_TARGETS, DTYPE_NAMES, NAMED_TARGETS,  # noqa: F401
                     ActivationEstimate, LinearShape, ModelLayout, estimate_activations, model_layout,
                     optimizer_state_bytes, quantized_linear_bytes, resolve_targets)
from .measure import saved_activation_bytes, stored_bytes  # noqa: F401
from .plan import (CUDA_CONTEXT_BYTES, METHODS, OPTIMIZERS, PART_LABELS, PART_NAMES, QUANTIZATIONS,  # noqa: F401
                   MemoryPlan, PlanSettings, plan_memory)
from .verdicts import Suggestion, Verdict, verdict  # noqa: F401
