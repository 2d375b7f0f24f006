"""An emulated CUDA device for CPU-only CI: run the course's GPU branches on a CPU.

CI has no GPU, so every `profile.is_gpu` branch of the notebooks is dead code there and the bugs that
only a GPU shows (a tensor left on the CPU while the model is on CUDA, `.numpy()` on a CUDA tensor, a
missing `.cpu()`) slip through. Inside `emulated_cuda("T4")` (or "A100") the CPU pretends to be that GPU:

    from tools.cuda_emulator import emulated_cuda
    with emulated_cuda("T4"):
        profile = detect()                      # kind "cuda", fp16 compute
        model = model.to("cuda")                # parameters report device cuda:0
        model(input_ids)                        # RuntimeError: Expected all tensors to be on the same device...
        model(input_ids.to("cuda")).logits.numpy()   # TypeError: can't convert cuda:0 device type tensor...

How it works (all at the `__torch_function__` level; C++ only ever sees CPU tensors, so every kernel
is the CPU one):

* `EmulatedCudaTensor`, a plain `torch.Tensor` subclass, is a tensor "on the GPU": its `device` answers
  `cuda:0` (`is_cuda` True), and its `__torch_function__` refuses to mix it with CPU tensors of one or
  more dimensions (0-dim CPU tensors are allowed, as on CUDA), raising CUDA's message. Results of
  operations on it are emulated too. `.numpy()` raises as on CUDA; `.cpu()` / `.to("cpu")` copy it
  back to a plain tensor. Outputs are turned into the subclass by assigning `__class__` (no alias, so
  a leaf stays a leaf and `param.grad` keeps its identity).
* `_EmulatorMode`, a `TorchFunctionMode`, sees calls on plain tensors too: `.to("cuda")`,
  `.to(torch.device("cuda"))`, `.to(0)`, `.to(emulated)`, `.cuda()` and every factory call with a
  CUDA `device=` (empty, zeros, tensor, arange, randn, ..., `*_like`, `new_*`) make emulated tensors.
* While torch's own Python code runs inside one of these calls (a `torch.nn.functional` wrapper,
  `Tensor.__repr__`, ...) `device` answers the real `cpu`, so that code makes CPU tensors as the CPU
  kernels expect; code outside (the course, transformers, accelerate, peft) sees `cuda:0`.
* `torch.__future__.set_swap_module_params_on_conversion(True)`, set during moves to cuda only, makes
  `Module.to("cuda")` swap each parameter for an emulated one (instead of setting `.data`, which would
  keep the plain class); other moves stay as torch makes them (a bitsandbytes `Params4bit` cannot be swapped).
* `torch.cuda` (and `torch.accelerator`) answer as a T4 (15 GB, capability 7.5, no native bf16) or an
  A100 (40 GB, capability 8.0, bf16). `memory_allocated()` sums the storages of the live emulated
  tensors Python can see (gc); the peak is the largest value a query has seen.
* What cannot run on a CPU is routed to the CPU implementation, with one printed line each time a
  route is first taken: `torch.autocast("cuda")` (also `torch.cuda.amp.autocast`) becomes CPU autocast
  with the same dtype; bitsandbytes needs nothing (its ops dispatch on the C++ device, which is the
  CPU); CUDA streams, events and device guards become no-ops; CUDA RNG state is the CPU's.

Enter and leave it as a context manager (`with emulated_cuda("A100"):`), which restores everything on
exit, or, for a whole notebook, `enable("T4")` in a first cell, `%load_ext tools.cuda_emulator` with
`COURSE_EMULATE_CUDA=T4` in the environment, or `setup_cell("T4")` (the source of such a cell) for a
runner to inject.

Not emulated: separate GPU memory (an emulated tensor's memory is host memory), asynchronous
execution (synchronize() is a no-op, so missing synchronize() calls do not show), CUDA kernels and
their numerics (every op runs the CPU kernel; 16-bit matrix products and attention on the device run as
fp32 products of the 16-bit values rounded to 16 bits once, closer to a GPU's than the CPU's fp16 kernels
and several times faster: `_half_product` says what still differs), `torch.save` of an
emulated tensor (it is saved as a CPU tensor), `torch.device("cuda")` as a context manager /
`torch.set_default_device("cuda")`, and C++ code that asks the tensor's device (it says cpu).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA0 = torch.device("cuda", 0)
CPU = torch.device("cpu")
ENV_VAR = "COURSE_EMULATE_CUDA"
MIX_MESSAGE = "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"
NUMPY_MESSAGE = ("can't convert cuda:0 device type tensor to numpy. "
                 "Use Tensor.cpu() to copy the tensor to host memory first.")


@dataclass(frozen=True)
class GPU:
    """What `torch.cuda.get_device_properties` reports for one emulated card."""

    name: str
    total_memory: int
    major: int
    minor: int
    multi_processor_count: int
    bf16: bool  # native bf16 (Ampere and newer)

    @property
    def is_integrated(self) -> bool:
        return False

    @property
    def is_multi_gpu_board(self) -> bool:
        return False

    @property
    def L2_cache_size(self) -> int:
        return 4 * 1024**2

    @property
    def gcnArchName(self) -> str:
        return "NVIDIA"

    @property
    def uuid(self) -> str:
        return "GPU-00000000-0000-0000-0000-emulated0000"

    @property
    def warp_size(self) -> int:
        return 32


GPUS = {
    "T4": GPU("Tesla T4", 15_828_320_256, 7, 5, 40, bf16=False),  # 14.74 GiB, what PyTorch reports
    "A100": GPU("NVIDIA A100-SXM4-40GB", 42_297_524_224, 8, 0, 108, bf16=True),  # 39.39 GiB
}
GPUS["A100-40GB"] = GPUS["A100"]
GPUS["A100-80GB"] = GPU("NVIDIA A100-SXM4-80GB", 84_987_740_160, 8, 0, 108, bf16=True)

_state = threading.local()


def _depth() -> int:
    return getattr(_state, "depth", 0)


@contextlib.contextmanager
def _inside() -> Iterator[None]:
    """Mark torch's own code running: `device` answers the real (CPU) device meanwhile."""
    _state.depth = _depth() + 1
    try:
        with torch._C.DisableTorchFunctionSubclass():
            yield
    finally:
        _state.depth -= 1


_routed: set[str] = set()


def _route(what: str) -> None:
    if what not in _routed:
        _routed.add(what)
        print(f"[cuda emulator] {what}", file=sys.stderr)


# ---------------------------------------------------------------------------
# The tensor
# ---------------------------------------------------------------------------

class EmulatedCudaTensor(torch.Tensor):
    """A CPU tensor that says it lives on cuda:0 and refuses to be mixed with CPU tensors."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        if _depth():
            return CPU
        return CUDA0

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return not _depth()

    @property
    def is_cpu(self) -> bool:  # type: ignore[override]
        return bool(_depth())

    def get_device(self) -> int:  # type: ignore[override]
        return -1 if _depth() else 0

    def __repr__(self, *, tensor_contents=None) -> str:  # type: ignore[override]
        with _inside():
            text = torch.Tensor.__repr__(self, tensor_contents=tensor_contents)
        text = text.replace("EmulatedCudaTensor(", "tensor(", 1)
        if not text.endswith(")"):
            return text
        cuts = [i for i in (text.find(", dtype="), text.find(", grad_fn="), text.find(", requires_grad=")) if i > 0]
        at = min(cuts) if cuts else len(text) - 1
        return text[:at] + ", device='cuda:0'" + text[at:]

    def __reduce_ex__(self, protocol):  # saved as a CPU tensor: a checkpoint must not need the emulator
        with _inside():
            plain = torch.Tensor._make_subclass(torch.Tensor, self.detach(), False)
            return plain.__reduce_ex__(protocol)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return _handle(func, args, kwargs or {})


def is_emulated(t: Any) -> bool:
    return isinstance(t, EmulatedCudaTensor)


def _mark(t: Any) -> Any:
    """Make a fresh plain tensor emulated, in place (identity, autograd and leaf-ness kept)."""
    if isinstance(t, torch.Tensor) and not is_emulated(t):
        if type(t) is torch.Tensor:
            t.__class__ = EmulatedCudaTensor
        elif type(t) is torch.nn.Parameter:  # what Parameter(emulated) gives: the subclass, marked a parameter
            t.__class__ = EmulatedCudaTensor
            t._is_param = True
        else:  # another subclass (bitsandbytes' Params4bit, ...): a class that is both
            t.__class__ = _emulated_class(type(t))
    return t


def _unmark(t: torch.Tensor) -> None:
    """Make an emulated tensor a CPU one again, in place."""
    if type(t) is EmulatedCudaTensor:
        t.__class__ = torch.nn.Parameter if getattr(t, "_is_param", False) else torch.Tensor
    elif is_emulated(t):
        t.__class__ = type(t)._emulated_base


@functools.lru_cache(maxsize=None)
def _emulated_class(base: type) -> type:
    return type(f"EmulatedCuda{base.__name__}", (EmulatedCudaTensor, base),
                {"_emulated_base": base, "__module__": __name__})


def _to_cpu_copy(t: torch.Tensor) -> torch.Tensor:
    """What `.cpu()` of a CUDA tensor gives: a new plain tensor with the same values (autograd kept)."""
    with _inside():
        out = torch.Tensor.clone(t)
    if type(out) is EmulatedCudaTensor:
        out.__class__ = torch.Tensor
    return out


# ---------------------------------------------------------------------------
# Device arguments
# ---------------------------------------------------------------------------

def _device_kind(device: Any) -> str | None:
    """'cuda', 'cpu', another type, or None for `device` arguments torch accepts."""
    if device is None:
        return None
    if isinstance(device, int) and not isinstance(device, bool):
        return "cuda"
    if isinstance(device, str):
        return torch.device(device).type
    if isinstance(device, torch.device):
        return device.type
    return None


def _cpu_device_arg(device: Any) -> Any:
    return "cpu" if _device_kind(device) == "cuda" else device


_TO = torch.Tensor.to
_CUDA = torch.Tensor.cuda
_CPU = torch.Tensor.cpu
_PIN = torch.Tensor.pin_memory
_DATA_SET = torch.Tensor.data.__set__
_NUMPY = {torch.Tensor.numpy, torch.Tensor.__array__}
_MAY_MIX = {  # what CUDA lets take CPU tensors next to CUDA ones
    torch.Tensor.copy_, torch.Tensor.__setitem__, torch.Tensor.__getitem__, torch.Tensor.data.__set__,
    torch.utils.swap_tensors, torch.Tensor.set_, torch.Tensor.__reduce_ex__, torch.Tensor.__deepcopy__,
    torch.Tensor.index_put_, torch.Tensor.index_put, torch._has_compatible_shallow_copy_type,
}
_OWNER_GETTERS = {torch.Tensor.grad.__get__, torch.Tensor._grad.__get__, torch.Tensor.data.__get__,
                  torch.Tensor._base.__get__}


def _parse_to(args: tuple, kwargs: dict) -> tuple[str | None, tuple, dict]:
    """Tensor.to's target device kind, and the call with the device made CPU."""
    self, rest = args[0], list(args[1:])
    kwargs = dict(kwargs)
    target = None
    if "device" in kwargs:
        target = _device_kind(kwargs["device"])
        kwargs["device"] = _cpu_device_arg(kwargs["device"])
    if "other" in kwargs:
        other = kwargs.pop("other")
        rest.insert(0, other)
    if rest:
        first = rest[0]
        if isinstance(first, torch.Tensor):
            target = "cuda" if is_emulated(first) else "cpu"
            rest[0] = first.dtype
        elif not isinstance(first, torch.dtype):
            kind = _device_kind(first)
            if kind is not None or first is None:
                target = kind
                rest[0] = _cpu_device_arg(first)
    return target, (self, *rest), kwargs


_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_, torch.Tensor.index_put}
INDEX_MESSAGE = "indices should be either on cpu or on the same device as the indexed tensor (cpu)"


_JOINS = {torch.cat, torch.concat, torch.concatenate, torch.stack, torch.hstack, torch.vstack, torch.dstack}


# Matrix products closer to a GPU's 16-bit ones: cuBLAS multiplies 16-bit inputs and accumulates in fp32 (by
# default it may also reduce split sums in 16 bits; flash attention rounds its probabilities to 16 bits before
# multiplying by V), rounding the result to 16 bits. The CPU's own fp16 kernels round otherwise and are 3-8x
# slower than its fp32 ones (no fp16 arithmetic without AVX512-FP16), so the emulator widens the inputs to
# fp32, runs the fp32 kernel and rounds the result once: a GPU's numerics up to those details and the
# summation order, at the CPU's fp32 speed. Forward products only where an input is on the emulated device
# (the backward of bitsandbytes' 4-bit layer, whose gradients reach it as CPU tensors, keeps the CPU's kernels).
# The fp32 copies autograd saves are not counted by the emulated memory queries.
_GEMMS = {torch.nn.functional.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm,
          torch.Tensor.mm, torch.bmm, torch.Tensor.bmm, torch.addmm, torch.Tensor.addmm, torch.baddbmm,
          torch.Tensor.baddbmm}
_ATTENTION = {torch.nn.functional.scaled_dot_product_attention}
_HALF = (torch.float16, torch.bfloat16)


def _is_gemm_4bit(func) -> bool:
    if type(func).__name__ != "OpOverload":  # cheap: most calls are plain torch functions
        return False
    try:
        return func is torch.ops.bitsandbytes.gemm_4bit.default
    except (AttributeError, RuntimeError):  # bitsandbytes not imported: no such op
        return False


def _half_gemm_4bit(args: tuple, kwargs: dict):
    """bitsandbytes' 4-bit product on a GPU: the weight dequantized to the 16-bit dtype, then a 16-bit GEMM
    (fp32 accumulation); its CPU kernel would run the same GEMM in fp16 arithmetic, several times slower."""
    names = ("A", "B", "shapeB", "absmax", "blocksize", "quant_type", "bias", "absmax_8bit", "absmax_code",
             "absmax_offset")
    given = dict(zip(names, args)) | kwargs
    A, absmax = given["A"], given["absmax"]
    if A.dtype not in _HALF:
        return None

    def run():
        scales = absmax
        if given.get("absmax_8bit") is not None:  # double quantization: the block scales are stored in 8 bits
            scales = torch.ops.bitsandbytes.dequantize_blockwise.default(
                given["absmax_8bit"], absmax, given["absmax_code"], 256, torch.float32) + given["absmax_offset"]
        weight = torch.ops.bitsandbytes.dequantize_4bit.default(given["B"], scales, given["blocksize"],
                                                                 given["quant_type"], given["shapeB"], A.dtype)
        bias = given.get("bias")
        with torch.autocast("cpu", enabled=False):
            return torch.nn.functional.linear(A.float(), weight.float(),
                                              None if bias is None else bias.float()).to(A.dtype)

    return run


def _half_product(func, args: tuple, kwargs: dict):
    """A 16-bit product on the emulated GPU, run as fp32 products of 16-bit values rounded once (or None).

    16 bits either because its floating inputs all are (a model stored in fp16), or because autocast would
    cast them (a GEMM under autocast: its inputs rounded to the autocast dtype first, as autocast does;
    attention is left to CPU autocast, which may keep it in fp32).
    """
    if func not in _GEMMS and func not in _ATTENTION:
        return _half_gemm_4bit(args, kwargs) if _is_gemm_4bit(func) else None
    if "out" in kwargs:
        return None
    flat, _ = tree_flatten((args, kwargs))
    floats = [t for t in flat if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floats or any(t.dtype == torch.float64 for t in floats):  # autocast leaves fp64 alone: so do we
        return None
    if func in _GEMMS and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in _HALF:
        dtype = torch.get_autocast_dtype("cpu")
    elif len({t.dtype for t in floats}) == 1 and floats[0].dtype in _HALF:
        dtype = floats[0].dtype
    else:
        return None

    def widen(t):
        return t.to(dtype).float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    def run():
        with torch.autocast("cpu", enabled=False):
            return func(*tree_map(widen, args), **tree_map(widen, kwargs)).to(dtype)

    return run


def _check_devices(func, flat: list, args: tuple = ()) -> None:
    has_cuda = any(is_emulated(t) for t in flat)
    if not has_cuda:
        return
    if func in _JOINS:  # no 0-dim exception here: every tensor joined must be on the device
        with _inside():
            if any(isinstance(t, torch.Tensor) and not is_emulated(t) for t in flat):
                raise RuntimeError(MIX_MESSAGE)
        return
    if func in _INDEXING:  # a CUDA tensor takes CPU indices, a CPU tensor no CUDA ones (the value may be either)
        indices, _ = tree_flatten(args[1] if len(args) > 1 else ())
        with _inside():
            cuda_indices = [t for t in indices if is_emulated(t) and t.dim() > 0]
        if args and not is_emulated(args[0]) and cuda_indices:
            raise IndexError(INDEX_MESSAGE)
        return
    if func in _MAY_MIX:
        return
    for t in flat:
        if isinstance(t, torch.Tensor) and not is_emulated(t) and t.dim() > 0 and t.device.type == "cpu":
            raise RuntimeError(MIX_MESSAGE)


def _result_on_cuda(func, args: tuple, flat: list) -> bool:
    """Where CUDA puts an op's result: an indexed tensor's device; else with the inputs that have dimensions
    (a 0-dim tensor may sit on another device, and the result follows the others); 0-dim only: cuda if any."""
    if func in _INDEXING:
        return bool(args) and is_emulated(args[0])
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    with _inside():  # dim() is a torch call too: answered without the emulator
        sized = [t for t in tensors if t.dim() > 0]
    return any(is_emulated(t) for t in (sized or tensors))


def _handle(func, args: tuple, kwargs: dict):
    """The one `__torch_function__` of the emulated tensor and of the mode."""
    if _depth():  # torch's own code inside a handled call: all CPU
        if "device" in kwargs:
            kwargs = dict(kwargs, device=_cpu_device_arg(kwargs["device"]))
        with _inside():
            return func(*args, **kwargs)

    flat_in, _ = tree_flatten((args, kwargs))
    any_emulated = any(is_emulated(t) for t in flat_in)

    if func in _NUMPY and args and is_emulated(args[0]):
        raise TypeError(NUMPY_MESSAGE)
    if func is torch.Tensor.__format__ and args and is_emulated(args[0]):
        with _inside():  # f"{x:.2e}" of a 0-dim CUDA tensor formats x.item(), as a plain Tensor's does
            if args[0].dim() == 0:
                return args[0].item().__format__(*args[1:])

    if func is _PIN:
        if is_emulated(args[0]):
            raise RuntimeError("cannot pin 'torch.cuda.FloatTensor' only dense CPU tensors can be pinned")
        _route("pin_memory() is a no-op (a CPU has no pinned memory to give)")
        return args[0]
    if kwargs.get("pin_memory"):
        _route("pin_memory() is a no-op (a CPU has no pinned memory to give)")
        kwargs = dict(kwargs, pin_memory=False)

    if func is torch.Tensor.type_as and len(args) > 1 and is_emulated(args[1]) and not is_emulated(args[0]):
        func, args = _TO, (args[0], args[1])  # type_as(x) is .to(x): to x's device too
    target: str | None = None
    if func is _TO:
        target, args, kwargs = _parse_to(args, kwargs)
    elif func is _CUDA:
        target, func, args, kwargs = "cuda", _TO, (args[0], "cpu"), {}
    elif func is _CPU:
        target = "cpu"
    elif "device" in kwargs:
        target = _device_kind(kwargs["device"])
        if target == "cuda":
            if isinstance(kwargs.get("generator"), torch.Generator):  # a CPU generator cannot fill a GPU tensor
                raise RuntimeError("Expected a 'cuda' device type for generator but found 'cpu'")
            kwargs = dict(kwargs, device="cpu")

    if target is None or func is not _TO:
        _check_devices(func, flat_in, args)

    half_product = _half_product(func, args, kwargs) if any_emulated else None
    with _inside():
        out = half_product() if half_product else func(*args, **kwargs)

    if func in (_TO, _CPU):
        self = args[0]
        if target == "cuda":
            if out is self and not is_emulated(self):  # CPU -> CUDA copies
                with _inside():
                    out = torch.Tensor.clone(self)
            if not isinstance(out, torch.nn.Parameter) or type(out) is torch.nn.Parameter:
                _mark(out)
            return out
        if target == "cpu" and is_emulated(out):
            return _to_cpu_copy(out)
        if target is None and is_emulated(self) and out is not self:
            return _mark(out)  # .to(dtype) stays on the device
        return out

    if func is _DATA_SET:  # `p.data = x` moves p to x's device
        self, value = args[0], args[1]
        if is_emulated(value) and not is_emulated(self):
            _mark(self)
        elif not is_emulated(value) and is_emulated(self):
            _unmark(self)
        return out

    if func in _OWNER_GETTERS:
        if args and is_emulated(args[0]):
            _mark(out)
        return out

    if target == "cuda" or (target is None and any_emulated and _result_on_cuda(func, args, flat_in)):
        inputs = {id(t) for t in flat_in if isinstance(t, torch.Tensor)}
        return tree_map(lambda t: t if id(t) in inputs else _mark(t), out)
    return out


class _EmulatorMode(TorchFunctionMode):
    """Sees torch calls on plain tensors too: factories with device="cuda", `.to("cuda")`, `.cuda()`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return _handle(func, args, kwargs or {})


# ---------------------------------------------------------------------------
# torch.cuda
# ---------------------------------------------------------------------------

class _Peak:
    value = 0


def _live_bytes() -> int:
    seen: dict[int, int] = {}
    with _inside():
        for obj in gc.get_objects():
            if issubclass(type(obj), EmulatedCudaTensor):  # type(), not isinstance: no __class__ hooks
                try:
                    storage = obj.untyped_storage()
                    seen[storage.data_ptr()] = storage.nbytes()
                except (RuntimeError, NotImplementedError):
                    continue
    return sum(seen.values())


class _Properties:
    def __init__(self, gpu: GPU):
        self._gpu = gpu
        self.name = gpu.name
        self.total_memory = gpu.total_memory
        self.major = gpu.major
        self.minor = gpu.minor
        self.multi_processor_count = gpu.multi_processor_count
        self.is_integrated = 0
        self.is_multi_gpu_board = 0
        self.L2_cache_size = gpu.L2_cache_size
        self.uuid = gpu.uuid
        self.warp_size = 32
        self.max_threads_per_multi_processor = 1024 if gpu.major == 7 else 2048
        self.regs_per_multiprocessor = 65536
        self.shared_memory_per_block = 49152
        self.shared_memory_per_block_optin = 65536 if gpu.major == 7 else 166912
        self.shared_memory_per_multiprocessor = 65536 if gpu.major == 7 else 167936
        self.gcnArchName = "NVIDIA"

    def __repr__(self) -> str:
        return (f"_CudaDeviceProperties(name='{self.name}', major={self.major}, minor={self.minor}, "
                f"total_memory={self.total_memory // 1024**2}MB, "
                f"multi_processor_count={self.multi_processor_count}) [emulated]")


class _NullContext:
    """Stands for torch.cuda.device / stream contexts, Streams and Events."""

    def __init__(self, *args, **kwargs):
        self.idx = 0
        self.device = CUDA0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def wait_stream(self, *args):
        pass

    def wait_event(self, *args):
        pass

    def record_event(self, *args):
        return _Event()

    def query(self):
        return True

    def is_capturing(self):
        return False


class _Event(_NullContext):
    def __init__(self, enable_timing=False, *args, **kwargs):
        super().__init__()
        self._time = None

    def record(self, stream=None):
        import time
        self._time = time.perf_counter()

    def elapsed_time(self, end) -> float:
        return (end._time - self._time) * 1000.0

    def wait(self, stream=None):
        pass


_RANDOM_NAMES = ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all", "manual_seed",
                 "manual_seed_all", "seed", "seed_all", "initial_seed")  # also in torch.cuda.random


def _cuda_api(gpu: GPU) -> dict[str, Any]:
    props = _Properties(gpu)

    def memory_allocated(device=None) -> int:
        used = _live_bytes()
        _Peak.value = max(_Peak.value, used)
        return used

    def max_memory_allocated(device=None) -> int:
        return max(_Peak.value, memory_allocated())

    def reset_peak_memory_stats(device=None) -> None:
        _Peak.value = 0

    def mem_get_info(device=None) -> tuple[int, int]:
        return gpu.total_memory - memory_allocated(), gpu.total_memory

    def memory_stats(device=None) -> dict:
        used = memory_allocated()
        return {"allocated_bytes.all.current": used, "allocated_bytes.all.peak": max_memory_allocated(),
                "reserved_bytes.all.current": used, "reserved_bytes.all.peak": max_memory_allocated(),
                "num_alloc_retries": 0, "num_ooms": 0}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return gpu.bf16 or including_emulation

    def get_rng_state(device="cuda"):
        return torch.get_rng_state()

    def get_rng_state_all():
        return [torch.get_rng_state()]

    def noop(*args, **kwargs):  # one object per name below: torch._dynamo refuses one function under two names
        return None

    def manual_seed(seed):
        torch.default_generator.manual_seed(int(seed))  # emulated tensors draw from the CPU generator

    api = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "is_initialized": lambda: True,
        "_lazy_init": noop,
        "init": noop,
        "set_device": noop,
        "get_device_name": lambda device=None: gpu.name,
        "get_device_properties": lambda device=None: props,
        "get_device_capability": lambda device=None: (gpu.major, gpu.minor),
        "get_arch_list": lambda: ["sm_75", "sm_80", "sm_86", "sm_90"],
        "is_bf16_supported": is_bf16_supported,
        "mem_get_info": mem_get_info,
        "memory_allocated": memory_allocated,
        "max_memory_allocated": max_memory_allocated,
        "memory_reserved": memory_allocated,
        "max_memory_reserved": max_memory_allocated,
        "reset_peak_memory_stats": reset_peak_memory_stats,
        "reset_max_memory_allocated": reset_peak_memory_stats,
        "reset_accumulated_memory_stats": noop,
        "memory_stats": memory_stats,
        "memory_summary": lambda *a, **k: f"emulated {gpu.name}: {memory_allocated() / 1024**2:.1f} MiB allocated",
        "synchronize": noop,
        "empty_cache": noop,
        "ipc_collect": noop,
        "get_rng_state": get_rng_state,
        "get_rng_state_all": get_rng_state_all,
        "set_rng_state": lambda state, device="cuda": torch.set_rng_state(state),
        "set_rng_state_all": lambda states: torch.set_rng_state(states[0]),
        "manual_seed": manual_seed,
        "manual_seed_all": manual_seed,
        "seed": noop,
        "seed_all": noop,
        "initial_seed": torch.initial_seed,
        "device": _NullContext,
        "device_of": _NullContext,
        "stream": _NullContext,
        "Stream": _NullContext,
        "Event": _Event,
        "current_stream": lambda device=None: _NullContext(),
        "default_stream": lambda device=None: _NullContext(),
        "is_current_stream_capturing": lambda: False,
    }
    return {name: _unique(value) for name, value in api.items()}


def _unique(value: Any) -> Any:
    if isinstance(value, type) or not callable(value):
        return value
    @functools.wraps(value)
    def function(*args, **kwargs):
        return value(*args, **kwargs)
    return function


def _accelerator_api() -> dict[str, Any]:
    api = {
        "is_available": lambda: True,
        "current_accelerator": lambda check_available=False: CUDA0.__class__("cuda"),
        "device_count": lambda: 1,
        "current_device_index": lambda: 0,
        "set_device_index": lambda device: None,
        "synchronize": lambda device=None: None,
        "current_stream": lambda device=None: _NullContext(),
        "set_stream": lambda stream: None,
        "get_device_capability": lambda device=None: {"supported_dtypes": [torch.float16, torch.bfloat16,
                                                                           torch.float32]},
        "empty_cache": lambda: None,
        "memory_allocated": lambda device=None: torch.cuda.memory_allocated(),
        "max_memory_allocated": lambda device=None: torch.cuda.max_memory_allocated(),
        "reset_peak_memory_stats": lambda device=None: torch.cuda.reset_peak_memory_stats(),
    }
    return {name: _unique(value) for name, value in api.items()}


# ---------------------------------------------------------------------------
# Routing what cannot run on a CPU
# ---------------------------------------------------------------------------

def _autocast_init(original):
    @functools.wraps(original)
    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        if device_type == "cuda":
            _route("torch.autocast('cuda') runs as CPU autocast (same dtype)")
            if dtype is None:
                dtype = torch.float16
            device_type = "cpu"
        original(self, device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
    return __init__


def _submit_in_mode(original):
    """ThreadPoolExecutor.submit whose job runs under the emulator too (a TorchFunctionMode is per thread;
    transformers loads weights in a thread pool)."""
    @functools.wraps(original)
    def submit(self, fn, /, *args, **kwargs):
        @functools.wraps(fn)
        def job(*a, **k):
            if not _active or any(isinstance(m, _EmulatorMode) for m in _mode_stack()):
                return fn(*a, **k)
            with _EmulatorMode():
                return fn(*a, **k)
        return original(self, job, *args, **kwargs)
    return submit


def _mode_stack() -> list:
    from torch.overrides import _get_current_function_mode_stack
    return _get_current_function_mode_stack()


def _import_bitsandbytes_for_cpu() -> None:
    """bitsandbytes picks its backend when imported, from torch.cuda: import it before torch.cuda says yes."""
    if "bitsandbytes" in sys.modules:
        return
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # not installed, or broken: the course reports that itself
        return
    _route("bitsandbytes runs its CPU backend (imported before the emulator turned on)")


_BASE_DATA = torch._C.TensorBase.data


def _get_data(self):
    return _BASE_DATA.__get__(self)


def _set_data(self, value):
    """`p.data = x` moves p to x's device (torch's setter does not ask __torch_function__ of a Parameter)."""
    with _inside():
        _BASE_DATA.__set__(self, value)
    if is_emulated(value) and not is_emulated(self):
        _mark(self)
    elif not is_emulated(value) and is_emulated(self) and isinstance(value, torch.Tensor):
        _unmark(self)


_DATA_PROPERTY = property(_get_data, _set_data, doc=_BASE_DATA.__doc__)


def _caches_to_clear() -> list:
    """lru_caches of libraries that remember whether CUDA is there."""
    found = []
    for name in ("transformers.utils.import_utils", "accelerate.utils.imports", "accelerate.utils.memory",
                 "peft.import_utils", "bitsandbytes.cextension"):
        module = sys.modules.get(name)
        if module is None:
            continue
        for value in vars(module).values():
            if isinstance(value, functools._lru_cache_wrapper):
                found.append(value)
    return found


# ---------------------------------------------------------------------------
# Entering and leaving
# ---------------------------------------------------------------------------

def _target_is_cuda(args: tuple, kwargs: dict) -> bool:
    """Whether `Module.to(*args, **kwargs)` moves to a CUDA device (an emulated tensor as target counts)."""
    target = args[0] if args else kwargs.get("device", kwargs.get("tensor"))
    if isinstance(target, torch.Tensor):
        return target.device.type == "cuda"  # the Python property: an emulated tensor answers cuda
    if isinstance(target, (str, int, torch.device)):
        return _device_kind(target) == "cuda"
    return False


def _has_bitsandbytes_params(module: torch.nn.Module) -> bool:
    """bitsandbytes' parameters move themselves (quantizing on the way) and cannot be swapped."""
    return any(type(p).__module__.startswith("bitsandbytes") or any(
        base.__module__.startswith("bitsandbytes") for base in type(p).__mro__) for p in module.parameters())


def _module_move(original, always: bool = False):
    """`Module.to` / `Module.cuda` that swap parameters for emulated ones when moving to cuda, and only then.

    `torch.__future__.set_swap_module_params_on_conversion(True)` keeps the subclass on parameters, but it
    also makes every other move swap, and a bitsandbytes `Params4bit` moved to the CPU cannot be swapped
    (its `detach` returns a plain tensor): so the flag is set for the moves to cuda alone.
    """
    @functools.wraps(original)
    def move(self, *args, **kwargs):
        if not (always or _target_is_cuda(args, kwargs)) or _has_bitsandbytes_params(self):
            return original(self, *args, **kwargs)
        before = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(True)
        try:
            return original(self, *args, **kwargs)
        finally:
            torch.__future__.set_swap_module_params_on_conversion(before)
    return move


class _Emulator:
    def __init__(self, gpu: str | GPU = "T4"):
        self.gpu = GPUS[gpu.upper() if gpu.upper() in GPUS else gpu] if isinstance(gpu, str) else gpu
        self._saved: list[tuple[Any, str, Any]] = []
        self._mode: _EmulatorMode | None = None
        self._env: str | None = ""

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, owner.__dict__.get(name, _MISSING) if isinstance(owner, type)
                            else getattr(owner, name, _MISSING)))
        setattr(owner, name, value)

    def start(self) -> "_Emulator":
        _import_bitsandbytes_for_cpu()
        for name, value in _cuda_api(self.gpu).items():
            self._patch(torch.cuda, name, value)
            if name in _RANDOM_NAMES:  # the Trainer's checkpoints call torch.cuda.random.get_rng_state directly
                self._patch(torch.cuda.random, name, value)
        for name, value in _accelerator_api().items():
            if hasattr(torch.accelerator, name):
                self._patch(torch.accelerator, name, value)
        autocast = torch.amp.autocast_mode.autocast
        self._patch(autocast, "__init__", _autocast_init(autocast.__init__))
        self._env = os.environ.get("USE_HUB_KERNELS")
        if self._env is None:  # transformers would fetch CUDA kernels from the Hub for a model on cuda
            os.environ["USE_HUB_KERNELS"] = "NO"
        self._patch(torch.Tensor, "data", _DATA_PROPERTY)
        from concurrent.futures import ThreadPoolExecutor
        self._patch(ThreadPoolExecutor, "submit", _submit_in_mode(ThreadPoolExecutor.submit))
        self._patch(torch.nn.Module, "to", _module_move(torch.nn.Module.to))
        self._patch(torch.nn.Module, "cuda", _module_move(torch.nn.Module.cuda, always=True))
        for cached in _caches_to_clear():
            cached.cache_clear()
        self._mode = _EmulatorMode()
        self._mode.__enter__()
        return self

    def stop(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        for owner, name, value in reversed(self._saved):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        self._saved.clear()
        if self._env is None:
            os.environ.pop("USE_HUB_KERNELS", None)
        for cached in _caches_to_clear():
            cached.cache_clear()
        _Peak.value = 0


_MISSING = object()
_active: list[_Emulator] = []


@contextlib.contextmanager
def emulated_cuda(gpu: str | GPU = "T4") -> Iterator[_Emulator]:
    """Run the block as if on one CUDA GPU ("T4", "A100" = "A100-40GB", "A100-80GB"); restores on exit."""
    if _active:
        raise RuntimeError("the CUDA emulator is already on")
    emulator = _Emulator(gpu).start()
    _active.append(emulator)
    try:
        yield emulator
    finally:
        _active.remove(emulator)
        emulator.stop()


def enable(gpu: str | GPU = "T4") -> _Emulator:
    """Turn the emulator on for the rest of the process (a notebook's first cell); `disable()` ends it."""
    if _active:
        return _active[0]
    emulator = _Emulator(gpu).start()
    _active.append(emulator)
    print(f"[cuda emulator] this kernel emulates one {emulator.gpu.name} (CPU kernels underneath)", file=sys.stderr)
    return emulator


def disable() -> None:
    while _active:
        _active.pop().stop()


def is_enabled() -> bool:
    return bool(_active)


def enable_from_env() -> _Emulator | None:
    """`enable(os.environ["COURSE_EMULATE_CUDA"])` where it is set (to T4, A100, ...), else nothing."""
    gpu = os.environ.get(ENV_VAR, "").strip()
    return enable(gpu) if gpu else None


def load_ipython_extension(ipython) -> None:
    """`%load_ext tools.cuda_emulator`: emulate the GPU named by COURSE_EMULATE_CUDA (default T4)."""
    enable(os.environ.get(ENV_VAR, "").strip() or "T4")


def unload_ipython_extension(ipython) -> None:
    disable()


def setup_cell(gpu: str = "T4", repo_root: str | None = None) -> str:
    """Source of a first cell that turns the emulator on in a notebook's kernel (for a runner to inject)."""
    root = repo_root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (f"import sys\nsys.path.insert(0, {root!r})\n"
            f"from tools.cuda_emulator import enable as _enable_cuda_emulator\n"
            f"_enable_cuda_emulator({gpu!r})")


def execute_notebook(path: str, gpu: str = "T4", timeout: int = 1800, kernel_name: str = "python3"):
    """Execute a notebook with the emulator on from its first cell; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(setup_cell(gpu)))
    NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
    return nb
