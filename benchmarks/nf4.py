"""Time our vectorised NF4 against bitsandbytes on a 4096 x 4096 matrix, and count mismatches.

    python benchmarks/nf4.py [--size 4096] [--repeats 5]

Prints the median of a few repeats of quantize and dequantize (block size 64)
for course_utils.quant and for bitsandbytes, on the CPU and, when available,
on CUDA, plus how many 4-bit codes and dequantized values differ. Not a test:
timings depend on the machine; mismatches should be 0 on the CPU. On CUDA
bitsandbytes runs its own kernels, whose rounding we have not verified: a
non-zero count there is reported, not hidden.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from course_utils import quant


def median_seconds(fn, repeats: int, device: str) -> float:
    fn()  # warm-up (allocations, lazy kernel loading)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(device: str, size: int, repeats: int) -> list[tuple]:
    import bitsandbytes.functional as F

    w = torch.randn(size, size, generator=torch.Generator().manual_seed(0)).to(device)
    codes, absmax = quant.quantize_nf4(w)
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
    ours_deq = quant.dequantize_nf4(codes, absmax)
    bnb_deq = F.dequantize_4bit(packed, state)
    code_mismatch = int((quant.unpack_4bit(packed) != codes.reshape(-1)).sum())
    absmax_mismatch = int((state.absmax != absmax).sum())
    value_mismatch = int((ours_deq != bnb_deq).sum())
    rows = [
        (device, "quantize", "course_utils.quant",
         median_seconds(lambda: quant.quantize_nf4(w), repeats, device)),
        (device, "quantize", "bitsandbytes",
         median_seconds(lambda: F.quantize_4bit(w, blocksize=64, quant_type="nf4"), repeats, device)),
        (device, "dequantize", "course_utils.quant",
         median_seconds(lambda: quant.dequantize_nf4(codes, absmax), repeats, device)),
        (device, "dequantize", "bitsandbytes",
         median_seconds(lambda: F.dequantize_4bit(packed, state), repeats, device)),
    ]
    print(f"{device}: mismatches in {w.numel():,} values: codes {code_mismatch}, "
          f"absmax {absmax_mismatch} of {absmax.numel():,}, dequantized {value_mismatch}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        rows += bench(device, args.size, args.repeats)
    print(f"\nNF4, block 64, {args.size} x {args.size} fp32, median of {args.repeats} runs, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'device':6s} | {'step':10s} | {'implementation':18s} | {'median':>9s}")
    for device, step, impl, seconds in rows:
        print(f"{device:6s} | {step:10s} | {impl:18s} | {seconds * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
