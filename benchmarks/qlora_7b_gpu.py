"""Measure a 7B QLoRA training step on a CUDA GPU and compare it with the memory plan.

    python benchmarks/qlora_7b_gpu.py                       # Qwen2.5-7B, the capstone's settings
    python benchmarks/qlora_7b_gpu.py --model olmo2-7b      # any config shipped in course_utils/configs
    python benchmarks/qlora_7b_gpu.py --model llama-7b --seq-len 1024 --batch 1

No download: the model is built from its shipped config with random weights,
layer by layer, and each decoder linear layer is quantized to NF4 + double
quantization on the GPU as soon as it is made (bitsandbytes' Linear4bit, as
`from_pretrained(..., quantization_config=...)` builds it), so the 16-bit model
never has to fit anywhere. Memory does not depend on the weights' values, and a
training step's time hardly does, so random weights measure what a real
checkpoint would use (the loss is meaningless).

Then it runs the capstone's recipe: LoRA r=16 on all linear layers (PEFT),
gradient checkpointing, paged 8-bit AdamW, micro-batches of `--batch` x
`--seq-len` tokens (every token real, no padding: the plan's worst case) with
`--grad-accum` micro-batches per step, in the GPU's compute dtype (fp16 on a T4,
bf16 on Ampere+). It prints the planner's prediction next to
`torch.cuda.max_memory_allocated/reserved()` and the training throughput.

On a machine without CUDA it exits with a message and status 1, measuring nothing;
`--plan-only` prints the predictions for a T4 and an A100 anywhere.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

NO_CUDA_MESSAGE = ("benchmarks/qlora_7b_gpu.py needs a CUDA GPU (bitsandbytes' 4-bit kernels and paged "
                   "optimizer); none is visible here, so nothing was measured. Run it on a GPU machine, "
                   "e.g. a Colab T4 or A100 runtime.")


def build_random_nf4_model(config, device: str, compute_dtype: torch.dtype, double_quant: bool = True,
                           seed: int = 0):
    """A causal LM from `config` with random weights, its decoder linears in bitsandbytes NF4.

    Built on the meta device first (no memory), then filled in module by
    module on `device`: each linear layer's 16-bit weight exists only until it
    is quantized. Embeddings, norms and the output head stay in
    `compute_dtype`, as transformers leaves them when loading in 4 bits.
    """
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=compute_dtype)
    output = model.get_output_embeddings()
    generator = torch.Generator(device=device).manual_seed(seed)
    std = getattr(config, "initializer_range", 0.02)
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear) or child is output:
                continue
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=double_quant,
                                      quant_type="nf4", device="meta")
            weight = torch.randn(child.out_features, child.in_features, device=device, dtype=compute_dtype,
                                 generator=generator) * std
            layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=double_quant,
                                             quant_type="nf4", module=layer).to(device)
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(torch.zeros(child.out_features, device=device, dtype=compute_dtype),
                                                requires_grad=False)
            setattr(parent, child_name, layer)
    made: dict[int, torch.nn.Parameter] = {}  # tied embeddings: one meta parameter, one real one
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if not param.is_meta:
                continue
            if id(param) not in made:
                if "norm" in type(module).__name__.lower():
                    data = torch.ones(param.shape, device=device, dtype=compute_dtype)
                else:
                    data = torch.randn(param.shape, device=device, dtype=compute_dtype, generator=generator) * std
                made[id(param)] = torch.nn.Parameter(data, requires_grad=False)
            setattr(module, name, made[id(param)])
    for parent in list(model.modules()):  # rotary embeddings compute their buffers in __init__: rebuild them
        for child_name, child in list(parent.named_children()):
            if any(buffer.is_meta for buffer in child.buffers(recurse=False)):
                setattr(parent, child_name, type(child)(config=model.config).to(device))
    left = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"could not materialise {left[:3]}: this architecture needs another rule in the benchmark.")
    model.is_loaded_in_4bit = True  # tells PEFT to use its bitsandbytes LoRA layers
    return model.eval()


def add_lora(model, rank: int, seed: int = 0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))


def train_steps(model, steps: int, batch: int, seq_len: int, grad_accum: int, optimizer: torch.optim.Optimizer,
                gradient_checkpointing: bool = True, seed: int = 0) -> tuple[list[float], list[float]]:
    """`steps` optimizer steps on random tokens; returns (losses, seconds per step)."""
    device = next(p for p in model.parameters() if p.requires_grad).device
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    params = [p for p in model.parameters() if p.requires_grad]
    losses, seconds = [], []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(grad_accum):
            ids = torch.randint(0, vocab, (batch, seq_len), generator=generator).to(device)
            loss = model(input_ids=ids, labels=ids).loss / grad_accum
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        losses.append(total)
    return losses, seconds


def print_example_plans(args) -> None:
    """The planner's prediction for these settings on a T4 (fp16) and an A100 40GB (bf16)."""
    from course_utils.memory import A100_40GB, T4, plan_memory

    for profile in (T4, A100_40GB):
        plan = plan_memory(args.model, "qlora", rank=args.rank, batch=args.batch, seq_len=args.seq_len,
                           gradient_checkpointing=True, optimizer="paged_adamw_8bit",
                           double_quant=not args.no_double_quant, profile=profile, name=args.model)
        print(f"--- {profile.name}")
        print(plan)
        print("verdict:", plan.verdict(profile), "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-7b", help="a shipped config name (course_utils/configs)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps, after one warm-up step")
    parser.add_argument("--no-double-quant", action="store_true")
    parser.add_argument("--plan-only", action="store_true",
                        help="print the plan on the example T4 and A100 profiles and stop (no GPU needed)")
    args = parser.parse_args(argv)
    if args.plan_only:
        print_example_plans(args)
        return 0
    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 1

    import bitsandbytes as bnb

    from course_utils.hardware import GIB, detect
    from course_utils.memory import load_config, plan_memory

    profile = detect()
    config = load_config(args.model)
    plan = plan_memory(config, "qlora", rank=args.rank, batch=args.batch, seq_len=args.seq_len,
                       gradient_checkpointing=True, optimizer="paged_adamw_8bit",
                       double_quant=not args.no_double_quant, profile=profile, name=args.model)
    print(profile, "\n")
    print(plan, "\n")
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = build_random_nf4_model(config, "cuda", profile.compute_dtype, double_quant=not args.no_double_quant)
    model = add_lora(model, args.rank)
    built = time.perf_counter() - start
    loaded = torch.cuda.memory_allocated()
    optimizer = bnb.optim.PagedAdamW8bit([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    losses, seconds = train_steps(model, 1 + args.steps, args.batch, args.seq_len, args.grad_accum, optimizer)
    allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    timed = seconds[1:]
    tokens_per_step = args.batch * args.seq_len * args.grad_accum
    predicted = plan.total - plan.overhead  # PyTorch's counters do not see the CUDA context
    print(f"model built and quantized in {built:.1f} s; model + adapters allocated: {loaded / GIB:.3f} GiB "
          f"(plan: {plan.static / GIB:.3f} GiB)")
    print(f"steps: {len(timed)} timed of {tokens_per_step} tokens, {sum(timed) / len(timed):.2f} s/step, "
          f"{tokens_per_step * len(timed) / sum(timed):.0f} tokens/s; losses {[round(x, 3) for x in losses]}")
    print(f"peak allocated {allocated / GIB:.3f} GiB, peak reserved {reserved / GIB:.3f} GiB, "
          f"plan without CUDA context {predicted / GIB:.3f} GiB "
          f"(allocated/plan = {allocated / predicted:.2f}, reserved/plan = {reserved / predicted:.2f})")
    print(f"plan with CUDA context {plan.total / GIB:.3f} GiB vs device {profile.memory_gib:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
