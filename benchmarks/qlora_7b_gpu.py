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

Then it runs the capstone's recipe through the capstone's own training path
(`course_utils.trainer`: transformers' Trainer): LoRA r=16 on all linear layers
(PEFT), gradient checkpointing, paged 8-bit AdamW, micro-batches of `--batch` x
`--seq-len` tokens (every token real, no padding: the plan's worst case) with
`--grad-accum` micro-batches per step, fp16 autocast with loss scaling and fp32
embeddings/norms on a T4, bf16 on Ampere+. `--imitate t4` imitates a T4 on a
bigger GPU (fp16 compute, memory capped at 14.74 GiB); `--imitate a100` an A100
40GB (bf16, 39.39 GiB). It prints the planner's prediction next to
`torch.cuda.max_memory_allocated/reserved()` and the training throughput, and
with `--json` writes them for `tools/gpu_check.py`'s report.

On a machine without CUDA it exits with a message and status 1, measuring nothing;
`--plan-only` prints the predictions for a T4 and an A100 anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

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


def random_features(vocab: int, n: int, seq_len: int, seed: int = 0) -> list[dict]:
    """`n` training examples of `seq_len` random tokens, every token a target (the plan's worst case)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, vocab, (n, seq_len), generator=generator).tolist()
    return [{"input_ids": row, "labels": row} for row in rows]


def train_steps(model, steps: int, batch: int, seq_len: int, grad_accum: int, profile, optimizer: str = "adamw",
                gradient_checkpointing: bool = True, seed: int = 0) -> tuple[list[float], list[float]]:
    """`steps` optimizer steps on random tokens through the capstone's Trainer path; (losses, seconds per step).

    The same `course_utils.trainer.build_trainer` as lesson 10: fp16 autocast with loss
    scaling on an fp16 profile, bf16 on a bf16 one, the chosen optimizer, gradient checkpointing.
    """
    import tempfile

    from transformers import TrainerCallback

    from course_utils.train import TrainConfig
    from course_utils.trainer import build_trainer

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds, self.last = [], None

        def _sync(self):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self.last = self._sync()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(self._sync() - self.last)

    config = TrainConfig(steps=steps, batch_size=batch, grad_accum=grad_accum, learning_rate=2e-4, warmup_steps=0,
                         max_length=seq_len, seed=seed, optimizer=optimizer,
                         gradient_checkpointing=gradient_checkpointing)
    features = random_features(model.config.vocab_size, steps * batch * grad_accum, seq_len, seed)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(model, features, config, pad_id=0, output_dir=scratch, profile=profile,
                                checkpoints=False)
        clock = StepClock()
        trainer.add_callback(clock)
        trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return losses, clock.seconds


IMITATIONS = ("t4", "a100", "native")


def imitated_profile(imitate: str):
    """The profile a run pretends to have: a T4 is fp16 compute in 14.74 GiB, an A100 40GB bf16 in 39.39 GiB.

    Memory is capped with `torch.cuda.set_per_process_memory_fraction`, so an
    allocation beyond the imitated card fails as it would there: the card's
    memory less its CUDA context (the planner's estimate), which a real card
    loses before PyTorch's allocator gets any. Speed is the real GPU's, not the
    imitated one's.
    """
    from dataclasses import replace

    from course_utils.hardware import GIB, detect
    from course_utils.memory import A100_40GB, CUDA_CONTEXT_BYTES, T4

    real = detect()
    if imitate == "native":
        return real
    card = T4 if imitate == "t4" else A100_40GB
    if card.memory_gib > real.memory_gib:
        raise SystemExit(f"cannot imitate {card.name}: this GPU has only {real.memory_gib:.1f} GiB")
    torch.cuda.set_per_process_memory_fraction((card.memory_gib - CUDA_CONTEXT_BYTES / GIB) / real.memory_gib)
    return replace(real, name=f"{real.name} imitating {card.name}", memory_gib=card.memory_gib,
                   native_bf16=card.native_bf16)


def print_example_plans(args) -> None:
    """The planner's prediction for these settings on a T4 (fp16) and an A100 40GB (bf16)."""
    from course_utils.memory import A100_40GB, T4, plan_memory
    from course_utils.trainer import planned_dtypes

    for profile in (T4, A100_40GB):
        plan = plan_memory(args.model, "qlora", rank=args.rank, batch=args.batch, seq_len=args.seq_len,
                           gradient_checkpointing=True, optimizer="paged_adamw_8bit",
                           double_quant=not args.no_double_quant, profile=profile, name=args.model,
                           **planned_dtypes(profile))
        print(f"--- {profile.name}")
        print(plan)
        print("verdict:", plan.verdict(profile), "\n")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "missing"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-7b", help="a shipped config name (course_utils/configs)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps, after one warm-up step")
    parser.add_argument("--no-double-quant", action="store_true")
    parser.add_argument("--imitate", choices=IMITATIONS, default="native",
                        help="t4: fp16 compute and a 14.74 GiB cap; a100: bf16 and a 39.39 GiB cap")
    parser.add_argument("--json", help="also write the measurement to this JSON file")
    parser.add_argument("--plan-only", action="store_true",
                        help="print the plan on the example T4 and A100 profiles and stop (no GPU needed)")
    args = parser.parse_args(argv)
    if args.plan_only:
        print_example_plans(args)
        return 0
    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 1

    from course_utils.hardware import GIB
    from course_utils.memory import load_config, plan_memory
    from course_utils.trainer import planned_dtypes, prepare_for_training

    profile = imitated_profile(args.imitate)
    config = load_config(args.model)
    plan = plan_memory(config, "qlora", rank=args.rank, batch=args.batch, seq_len=args.seq_len,
                       gradient_checkpointing=True, optimizer="paged_adamw_8bit",
                       double_quant=not args.no_double_quant, profile=profile, name=args.model,
                       **planned_dtypes(profile))
    print(profile, "\n")
    print(plan, "\n")
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = build_random_nf4_model(config, "cuda", profile.compute_dtype, double_quant=not args.no_double_quant)
    prepare_for_training(model, profile)  # the capstone's rule: fp32 embeddings/norms/head on fp16 devices
    model = add_lora(model, args.rank)
    built = time.perf_counter() - start
    loaded = torch.cuda.memory_allocated()
    losses, seconds = train_steps(model, 1 + args.steps, args.batch, args.seq_len, args.grad_accum, profile,
                                  optimizer="paged_adamw_8bit")
    allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    timed = seconds[1:]
    tokens_per_step = args.batch * args.seq_len * args.grad_accum
    # PyTorch's counters see neither the CUDA context nor the paged optimizer's state (bitsandbytes keeps it in
    # unified memory, which the driver may move to CPU RAM): the plan without both is what they can measure.
    paged_state = plan.parts["optimizer"] if "paged" in plan.settings.optimizer else 0
    predicted = plan.total - plan.overhead - paged_state
    result = {
        "device": torch.cuda.get_device_name(0), "imitate": args.imitate, "profile": profile.name,
        "compute_dtype": str(profile.compute_dtype), "model": args.model, "rank": args.rank, "batch": args.batch,
        "seq_len": args.seq_len, "grad_accum": args.grad_accum, "timed_steps": len(timed),
        "peak_allocated_gib": allocated / GIB, "peak_reserved_gib": reserved / GIB,
        "plan_total_gib": plan.total / GIB, "plan_without_context_gib": predicted / GIB,
        "plan_paged_optimizer_gib": paged_state / GIB,
        "model_and_adapters_gib": loaded / GIB, "plan_static_gib": plan.static / GIB,
        "seconds_per_step": sum(timed) / len(timed), "tokens_per_second": tokens_per_step * len(timed) / sum(timed),
        "losses": losses, "build_seconds": built, "versions": versions(),
    }
    print(f"model built and quantized in {built:.1f} s; model + adapters allocated: {loaded / GIB:.3f} GiB "
          f"(plan: {plan.static / GIB:.3f} GiB)")
    print(f"steps: {len(timed)} timed of {tokens_per_step} tokens, {result['seconds_per_step']:.2f} s/step, "
          f"{result['tokens_per_second']:.0f} tokens/s; losses {[round(x, 3) for x in losses]}")
    print(f"peak allocated {allocated / GIB:.3f} GiB, peak reserved {reserved / GIB:.3f} GiB, "
          f"plan without CUDA context and paged optimizer state {predicted / GIB:.3f} GiB "
          f"(allocated/plan = {allocated / predicted:.2f}, reserved/plan = {reserved / predicted:.2f})")
    print(f"plan with CUDA context {plan.total / GIB:.3f} GiB vs device {profile.memory_gib:.2f} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
