"""Print memory plans for the course's models and methods, and the published points to compare with.

    HF_HUB_OFFLINE=1 python benchmarks/memory_plan.py

Nothing is downloaded or allocated: every number comes from course_utils.memory
working on the shipped configs. Parts are in GiB (2^30 bytes); published
figures quoted in GB (10^9 bytes) are converted where they are compared.
"""

from __future__ import annotations

import torch

from course_utils.hardware import GIB
from course_utils.memory import A100_40GB, A100_80GB, PART_NAMES, T4, plan_memory

CAPSTONE = dict(rank=16, targets="all-linear", batch=2, seq_len=512, gradient_checkpointing=True,
                optimizer="paged_adamw_8bit")
CANDIDATES = {"qwen2.5-7b": "Qwen2.5-7B-Instruct", "olmo2-7b": "OLMo-2-1124-7B", "llama-7b": "Llama-2-7B"}
SIZES = {"smollm2-135m": "SmolLM2-135M", "qwen2.5-1.5b": "Qwen2.5-1.5B", "qwen2.5-7b": "Qwen2.5-7B",
         "llama-13b": "Llama-2-13B", "llama-70b": "Llama-2-70B"}
SHORT = {"base_weights": "base", "quant_constants": "qconst", "unquantized": "unquant", "adapters": "adapt",
         "gradients": "grads", "optimizer": "optim", "activations": "acts", "overhead": "cuda"}


def gib(n: int) -> str:
    return f"{n / GIB:7.2f}"


PROFILE_NAMES = {id(T4): "T4", id(A100_40GB): "A100-40", id(A100_80GB): "A100-80"}


def table(rows: list[tuple[str, object]], profiles) -> None:
    header = f"{'model / setting':<32}" + "".join(f"{SHORT[p]:>8}" for p in PART_NAMES) + f"{'total':>9} "
    header += "".join(f"{PROFILE_NAMES[id(p)]:>9}" for p in profiles)
    print(header)
    for label, plan in rows:
        fits = "".join(f"{'fits' if plan.verdict(p).fits else 'no':>9}" for p in profiles)
        print(f"{label:<32}" + "".join(f"{gib(v):>8}" for v in plan.parts.values()) + f"{gib(plan.total):>9} " + fits)


def main() -> None:
    torch.set_num_threads(1)
    print("== Capstone: QLoRA r=16 all-linear, batch 2 x 512, gradient checkpointing, paged 8-bit AdamW (GiB)")
    rows = []
    for profile in (T4, A100_40GB):
        for name, label in CANDIDATES.items():
            plan = plan_memory(name, "qlora", profile=profile, name=label, **CAPSTONE)
            rows.append((f"{label.removesuffix('-Instruct')} {PROFILE_NAMES[id(profile)]} {str(plan.settings.compute_dtype)[6:]}", plan))
    table(rows, (T4, A100_40GB))
    print("\nThe Qwen2.5-7B plan on a T4, part by part:")
    print(plan_memory("qwen2.5-7b", "qlora", profile=T4, name="Qwen2.5-7B-Instruct", **CAPSTONE).summary())

    print("\n== Full FT vs LoRA vs QLoRA, bf16 compute, batch 2 x 512, gradient checkpointing, r=16 all-linear (GiB)")
    print("   full: fp32 master weights + AdamW; lora: bf16 base + AdamW; qlora: nf4+DQ base + paged 8-bit AdamW")
    rows = []
    for name, label in SIZES.items():
        common = dict(profile=A100_80GB, batch=2, seq_len=512, gradient_checkpointing=True, name=label)
        rows.append((f"{label} full", plan_memory(name, "full", **common)))
        rows.append((f"{label} lora", plan_memory(name, "lora", rank=16, **common)))
        rows.append((f"{label} qlora", plan_memory(name, "qlora", rank=16, optimizer="paged_adamw_8bit", **common)))
    table(rows, (T4, A100_40GB, A100_80GB))

    print("\n== What to change when it does not fit: Qwen2.5-7B LoRA (bf16 base) on a T4")
    print(plan_memory("qwen2.5-7b", "lora", batch=2, seq_len=512, profile=T4).verdict(T4))
    print("\n== Llama-2-70B shape, QLoRA, on an A100-80GB")
    print(plan_memory("llama-70b", "qlora", batch=1, seq_len=512, gradient_checkpointing=True,
                      optimizer="paged_adamw_8bit", profile=A100_80GB).verdict(A100_80GB))

    print("\n== Published reference points")
    full = plan_memory("llama-7b", "full", batch=1, seq_len=512, profile=A100_80GB)
    static = full.base_weights + full.unquantized + full.gradients + full.optimizer
    print(f"full FT, Llama-2-7B shape: {static / full.total_params:.2f} bytes/param before activations "
          f"(rule of thumb: 16), {static / 1e9:.1f} GB (rule of thumb for 7B: about 112 GB)")
    qbase = plan_memory("llama-7b", "qlora", profile=A100_80GB)
    print(f"QLoRA, Llama 7B nf4+DQ base model (linears + constants + bf16 embeddings/head/norms): "
          f"{qbase.model_bytes / 1e6:,.0f} MB (QLoRA paper: about 5,048 MB for LLaMA-7B in 4-bit)")
    paper_setup = plan_memory("llama-7b", "qlora", rank=64, unquantized_dtype=torch.float32, profile=A100_80GB)
    print(f"  the same with fp32 embeddings/head/norms (prepare_model_for_kbit_training) and r=64 fp32 adapters: "
          f"{(paper_setup.model_bytes + paper_setup.adapters) / 1e6:,.0f} MB (a guess at what the paper counted)")
    bits = 8 * (qbase.base_weights + qbase.quant_constants) / qbase.layout.linear_weight_params
    print(f"  nf4+DQ bits per quantized weight: {bits:.3f} (paper arithmetic: 4.127)")
    guanaco = plan_memory("llama-13b", "qlora", rank=64, batch=1, seq_len=512, gradient_checkpointing=True,
                          optimizer="paged_adamw_32bit", profile=A100_80GB)
    print(f"QLoRA, Llama 13B shape, r=64 all-linear, batch 1 x 512, checkpointing, paged AdamW: "
          f"{guanaco.total / 1e9:.1f} GB with CUDA context, {(guanaco.total - guanaco.overhead) / 1e9:.1f} GB without "
          f"(QLoRA paper: Guanaco-13B about 10 GB)")
    print(f"  of which paged optimizer states {guanaco.optimizer / 1e9:.1f} GB, which unified memory can keep in CPU RAM")
    for name, label, published in (("qwen2.5-7b", "Qwen2.5-7B", 7.89), ("llama-7b", "Llama-2-7B shape", None)):
        plan = plan_memory(name, "qlora", profile=T4, **{**CAPSTONE, "optimizer": "adamw_8bit"})
        reserved = (plan.total - plan.overhead) / 1e9
        ref = f"(Unsloth on a T4, with its fused kernels: {published} GB reserved)" if published else \
            "(Unsloth: Llama-3.1-8B 7.92 GB, Mistral-7B 5.84 GB; different vocabularies)"
        print(f"T4 QLoRA {label}, r=16 all-linear, batch 2 x 512, 8-bit AdamW: {reserved:.2f} GB "
              f"without the CUDA context {ref}")


if __name__ == "__main__":
    main()
