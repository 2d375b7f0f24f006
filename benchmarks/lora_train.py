"""Throughput of the course's training loop vs PEFT with a minimal hand-written torch loop.

    python benchmarks/lora_train.py [--steps 10] [--warmup 2] [--batch-size 8] [--repeats 2] [--device cpu]
                                    [--clock wall|cpu]

Both sides train the same PEFT LoRA model (the course's standard adapter
settings: r=8, alpha=16, all linear layers) on the same SQL training batches
(batch 8, the task's natural lengths), with AdamW at the same learning rate.
The course side is `course_utils.train.train`; the plain side is the shortest
loop that does the same work (pad, forward, backward, step). Warm-up steps
(allocations, first-call overheads) are not timed. Each side runs `--repeats`
times, alternating, and the best run is reported, because other processes on
a shared machine only ever make a run slower. On a busy CPU, `--clock cpu`
times both loops with this process's CPU time instead of wall time (run with
OMP_NUM_THREADS=1 so CPU time is the work done, not threads spinning).

Not a test: it prints a table of tokens/s (answer and prompt tokens that are
not padding) on the CPU and, when available, on CUDA. The course loop should
reach at least the plain loop's throughput; a small gap either way is noise.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import types

import torch

from course_utils import train as train_module
from course_utils.adapters import course_adapter_settings, lora_config
from course_utils.data import load_examples, training_features
from course_utils.models import load_model, load_tokenizer
from course_utils.train import TrainConfig, batch_indices, train

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def peft_model(device: str):
    from peft import get_peft_model

    torch.manual_seed(0)
    settings = course_adapter_settings()
    dtype = torch.float32 if device == "cpu" else None  # on a GPU: the profile's compute dtype (bf16/fp16)
    return get_peft_model(load_model(device=device, dtype=dtype), lora_config(settings))


def course_loop(tokenizer, examples, device: str, steps: int, warmup: int, batch_size: int,
                clock=time.perf_counter) -> tuple[int, float]:
    """Tokens and seconds of `steps` timed steps of course_utils.train.train, after `warmup` untimed ones."""
    train_module.time = types.SimpleNamespace(perf_counter=clock)  # the loop times its steps with this clock
    model = peft_model(device)
    config = TrainConfig(steps=warmup + steps, batch_size=batch_size, learning_rate=1e-3, seed=0,
                         warmup_steps=1, log_every=10**9)
    with tempfile.TemporaryDirectory() as folder:
        train(model, tokenizer, examples, config, output_dir=folder, stop_after=warmup)  # untimed warm-up
        result = train(model, tokenizer, examples, config, output_dir=folder)  # resumes: times only these steps
    train_module.time = time
    assert result.resumed_from == warmup and len(result.losses) == warmup + steps
    return result.tokens, result.seconds


def plain_loop(tokenizer, examples, device: str, steps: int, warmup: int, batch_size: int,
               clock=time.perf_counter) -> tuple[int, float]:
    """The same batches through PEFT + a minimal torch loop: pad, forward, backward, AdamW step."""
    model = peft_model(device)
    model.train()
    features = [training_features(tokenizer, e) for e in examples]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tokens, start = 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            tokens, start = 0, clock()
        rows = [features[i] for i in batch_indices(len(features), batch_size, step, seed=0)]
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.tensor([r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"])) for r in rows])
        labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
        loss = model(input_ids=ids.to(device), labels=labels.to(device), attention_mask=mask.to(device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the loop reads the loss each step, as any loop that logs it does
        tokens += int(mask.sum())
    if device == "cuda":
        torch.cuda.synchronize()
    return tokens, clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--device", choices=["cpu", "cuda"], action="append",
                        help="default: cpu, and cuda when available")
    args = parser.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    tokenizer = load_tokenizer()
    examples = load_examples("sql", "train")
    print(f"LoRA r=8 all-linear on SmolLM2-135M, SQL task, batch {args.batch_size}, {args.steps} timed steps "
          f"after {args.warmup} warm-up, best of {args.repeats}, {args.clock} clock; "
          f"torch threads: {torch.get_num_threads()}")
    print(f"{'device':<7} {'loop':<28} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'vs plain':>9}")
    for device in devices:
        best: dict[str, tuple[int, float]] = {}
        for _ in range(args.repeats):
            for name, loop in (("course_utils.train.train", course_loop), ("PEFT + plain torch loop", plain_loop)):
                tokens, seconds = loop(tokenizer, examples, device, args.steps, args.warmup, args.batch_size,
                                       CLOCKS[args.clock])
                if name not in best or tokens / seconds > best[name][0] / best[name][1]:
                    best[name] = (tokens, seconds)
        assert best["course_utils.train.train"][0] == best["PEFT + plain torch loop"][0], "both see the same batches"
        plain_rate = best["PEFT + plain torch loop"][0] / best["PEFT + plain torch loop"][1]
        for name, (tokens, seconds) in best.items():
            rate = tokens / seconds
            print(f"{device:<7} {name:<28} {tokens:>7} {seconds:>8.2f} {rate:>9.0f} {rate / plain_rate:>9.2f}")


if __name__ == "__main__":
    main()
