"""Export a merged model to GGUF, the one-file format llama.cpp, Ollama and LM Studio run.

The converter is written here, on the `gguf` package from PyPI (its writer, its
tensor-name maps and its numpy quantizers), for the two architectures the
course uses: llama (SmolLM2) and qwen2 (Qwen2.5). It writes the tokenizer, its
special tokens and the chat template into the file's metadata, so the file
needs no Python to be used.

It reads the merged checkpoint one tensor at a time and writes each tensor as
soon as it is converted (the header is written first, from the shapes alone),
so it needs about one tensor of RAM beside the tokenizer: a 7B exports within a
free Colab runtime. Disk: the output's size (`gguf_size`), checked before
anything is written. The file is written aside and renamed when complete.

Types: F32, F16, BF16 (every matrix in that dtype) and the block quantizers the
`gguf` package implements in numpy, Q8_0 (blocks of 32 int8 values with one
fp16 scale: lesson 06's absmax quantizer with its own block size) and Q4_0
(blocks of 32 4-bit values, one fp16 scale; the output matrix stays Q8_0).
Norm weights and biases (1-D) stay F32 in every type, as llama.cpp's own
converter keeps them. Rope scaling (YaRN and the like) is refused, not dropped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from .cache import fsync_path, replace_durably
from .merge import base_shards

EXPORT_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0")
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
# llama.cpp picks its pre-tokenizer (how text is split before BPE) by name; the course's two tokenizers:
PRE_TOKENIZERS = {("llama", 49152): "smollm", ("qwen2", 151936): "qwen2", ("qwen2", 152064): "qwen2"}
_FILE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q8_0": "MOSTLY_Q8_0",
               "Q4_0": "MOSTLY_Q4_0"}


def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{model_dir} holds no config.json: export a saved model folder (merged.save_pretrained(...)"
                         " or merge_adapter_shardwise's output).")
    config = json.loads(path.read_text())
    if (model_dir / "adapter_config.json").exists():
        raise ValueError(f"{model_dir} is a LoRA adapter, not a model: merge it into its base first "
                         "(course_utils.merge.merge_adapter_shardwise, or merge_and_unload() and save_pretrained).")
    if config.get("quantization_config"):
        raise ValueError(f"{model_dir} holds a {config['quantization_config'].get('quant_method', 'quantized')} "
                         "model: GGUF is written from 16- or 32-bit weights (the file quantizes them itself). Merge "
                         "the adapter into the original 16-bit base (merge_adapter_shardwise), not the 4-bit copy.")
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{architecture} is not an architecture this converter knows ({', '.join(ARCHITECTURES)}); "
                         "for others use llama.cpp's convert_hf_to_gguf.py.")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        raise ValueError(f"{model_dir} uses {rope_type} rope scaling, which this converter does not write (the file "
                         "would run with plain RoPE and answer wrongly): use llama.cpp's convert_hf_to_gguf.py, or "
                         "the model's config without rope scaling.")
    heads = config["num_attention_heads"]
    if config.get("head_dim", config["hidden_size"] // heads) * heads != config["hidden_size"]:
        raise ValueError(f"{model_dir}: head_dim x heads differs from hidden_size, which needs GGUF's key_length and "
                         "value_length keys this converter does not write: use llama.cpp's convert_hf_to_gguf.py.")
    return config


def _permute_for_llama(weight: np.ndarray, heads: int) -> np.ndarray:
    """transformers' rotary layout (halves) -> llama.cpp's (interleaved pairs), for q_proj and k_proj of llama."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _gguf_type(name: str, shape: tuple[int, ...], export_type: str, is_output: bool = False):
    """The GGML type a tensor is stored in: F32 for 1-D tensors, else the export type.

    A 4-bit export keeps the output matrix (the embedding, when it is tied) in
    8 bits: every token's logit goes through it, and llama.cpp's own quantizer
    gives it more bits too (Q6_K, which the gguf package cannot write).
    """
    from gguf import GGMLQuantizationType

    if len(shape) < 2:
        return GGMLQuantizationType.F32
    if export_type == "Q4_0" and is_output:
        export_type = "Q8_0"
    kind = GGMLQuantizationType[export_type]
    block = {"Q8_0": 32, "Q4_0": 32}.get(export_type, 1)
    if shape[-1] % block:
        raise ValueError(f"{name} has {shape[-1]} columns, not a multiple of {export_type}'s block of {block}: "
                         "export this model as F16 or BF16.")
    return kind


def _bytes_of(shape: tuple[int, ...], kind) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[kind]
    return int(np.prod(shape[:-1])) * shape[-1] // block * size


def _plan(model_dir: Path, config: dict, export_type: str) -> list[tuple[Path, str, str, tuple[int, ...], object]]:
    """(shard, checkpoint name, GGUF name, shape, GGML type) of every tensor the file will hold, read from headers."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map
    from safetensors import safe_open

    arch = ARCHITECTURES[config["architectures"][0]]
    names = get_tensor_name_map(next(a for a, n in MODEL_ARCH_NAMES.items() if n == arch), config["num_hidden_layers"])
    plan = []
    for shard in (model_dir / name for name in base_shards(model_dir)):
        with safe_open(shard, framework="pt") as handle:
            for key in handle.keys():
                if key.endswith("rotary_emb.inv_freq") or (key == "lm_head.weight" and config.get("tie_word_embeddings")):
                    continue  # recomputed by llama.cpp / the tied embedding is written once
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise ValueError(f"{shard.name}: tensor {key} has no GGUF name for {arch}; this converter knows "
                                     "the standard layers of SmolLM2 and Qwen2.5.")
                shape = tuple(handle.get_slice(key).get_shape())
                is_output = name == "output.weight" or (name == "token_embd.weight"
                                                        and bool(config.get("tie_word_embeddings")))
                plan.append((shard, key, name, shape, _gguf_type(key, shape, export_type, is_output)))
    return plan


def gguf_size(model_dir: str | os.PathLike, export_type: str = "Q8_0") -> int:
    """Bytes of the tensors a GGUF export of `model_dir` writes (the tokenizer adds a few MB)."""
    model_dir = Path(model_dir)
    return sum(_bytes_of(shape, kind) for *_, shape, kind in _plan(model_dir, _read_config(model_dir), export_type))


def _add_tokenizer(writer, model_dir: Path, config: dict, arch: str) -> None:
    from gguf import TokenType
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab_size = config["vocab_size"]
    pre = PRE_TOKENIZERS.get((arch, vocab_size))
    if pre is None:
        raise ValueError(f"a {arch} model with a vocabulary of {vocab_size} tokens: not a tokenizer this converter "
                         f"knows (SmolLM2's, Qwen2.5's); for others use llama.cpp's convert_hf_to_gguf.py.")
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for i in range(vocab_size):  # ids past the tokenizer's vocabulary (Qwen pads its embedding) are unused
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        looks_special = by_id[i].startswith("<|") and by_id[i].endswith("|>")  # Qwen's <|fim_prefix|>, as llama.cpp
        types.append(TokenType.CONTROL if i in added and (added[i].special or looks_special) else
                     TokenType.USER_DEFINED if i in added else TokenType.NORMAL)
    merges = json.loads((model_dir / "tokenizer.json").read_text())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id")
        if token_id is None:  # Qwen's tokenizer names no BOS; its config does (llama.cpp's converter reads it there)
            token_id = config.get(f"{kind}_token_id")
        if isinstance(token_id, int):
            getattr(writer, {"bos": "add_bos_token_id", "eos": "add_eos_token_id", "unk": "add_unk_token_id",
                             "pad": "add_pad_token_id"}[kind])(token_id)
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def export_gguf(model_dir: str | os.PathLike, output: str | os.PathLike, export_type: str = "Q8_0",
                progress: bool = True) -> Path:
    """Write `model_dir` (a merged llama or qwen2 checkpoint) to the GGUF file `output` in `export_type`.

    Refuses, before writing anything: an existing `output` (nothing is
    overwritten), an adapter or a 4-bit model, an architecture or tokenizer it
    does not know, a disk without room for the file. Returns `output`.
    """
    from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, quants
    from safetensors import safe_open
    from tqdm.auto import tqdm

    if export_type not in EXPORT_TYPES:
        raise ValueError(f"export_type must be one of {EXPORT_TYPES}, got {export_type!r}.")
    model_dir, output = Path(model_dir), Path(output)
    if output.exists():
        raise ValueError(f"{output} exists: choose another file name, or delete it first (nothing is overwritten).")
    config = _read_config(model_dir)
    arch = ARCHITECTURES[config["architectures"][0]]
    plan = _plan(model_dir, config, export_type)
    needed = sum(_bytes_of(shape, kind) for *_, shape, kind in plan) + 64 * 2**20  # tensors + tokenizer and slack
    output.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(output.parent).free
    if free < needed:
        raise ValueError(f"{output.parent} has {free / 2**30:.1f} GiB free; the {export_type} file needs about "
                         f"{needed / 2**30:.1f} GiB: free some space or write elsewhere.")
    partial = output.with_name(output.name + ".partial")
    partial.unlink(missing_ok=True)  # an export killed before it could tidy up (out of memory): unusable, ours
    writer = GGUFWriter(partial, arch)
    try:
        heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        writer.add_name(Path(config.get("_name_or_path") or model_dir.name).name)
        writer.add_context_length(config["max_position_embeddings"])
        writer.add_embedding_length(config["hidden_size"])
        writer.add_block_count(config["num_hidden_layers"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_rope_dimension_count(head_dim)
        rope = config.get("rope_parameters") or {}
        writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
        writer.add_vocab_size(config["vocab_size"])
        writer.add_file_type(LlamaFileType[_FILE_TYPES[export_type]])
        writer.add_quantization_version(2)
        _add_tokenizer(writer, model_dir, config, arch)
        for _, key, name, shape, kind in plan:  # the header first, from the shapes alone
            writer.add_tensor_info(name, shape, np.dtype(np.float32), _bytes_of(shape, kind), raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        handles = {}
        for shard, key, name, shape, kind in tqdm(plan, desc=f"writing {export_type}", disable=not progress):
            if shard not in handles:
                handles = {shard: safe_open(shard, framework="pt")}  # one shard open at a time
            weight = handles[shard].get_tensor(key).to(torch.float32).numpy()
            if arch == "llama" and key.endswith("q_proj.weight"):
                weight = _permute_for_llama(weight, heads)
            elif arch == "llama" and key.endswith("k_proj.weight"):
                weight = _permute_for_llama(weight, kv_heads)
            writer.write_tensor_data(quants.quantize(weight, kind) if kind != GGMLQuantizationType.F32 else weight)
        writer.close()
        fsync_path(partial)
        if output.exists():  # created while this export ran: still not overwritten
            raise ValueError(f"{output} appeared while exporting: choose another file name.")
        replace_durably(partial, output)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)  # nothing partial stays behind
        raise
    return output
