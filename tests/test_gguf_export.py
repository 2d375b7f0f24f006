"""GGUF export: the file is read back by two independent readers and computes what the model computed.

On the mini model (tests/mini_model.py: SmolLM2's architecture and tokenizer, two small layers). Reader 1 is
the `gguf` package's own reader (metadata, names, shapes, types); reader 2 is transformers' GGUF loader,
which dequantizes and un-permutes with its own code. llama.cpp itself (reader 3) is not installed here.
"""

import json
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch

from course_utils import gguf_export
from course_utils.gguf_export import export_gguf, gguf_size
from mini_model import mini_model_dir

PROMPT = "SELECT name FROM employees WHERE salary > 100;"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return folder, {kind: export_gguf(mini_model_dir(), folder / f"mini-{kind}.gguf", kind, progress=False)
                    for kind in ("F32", "Q8_0")}


def logits_of(model, tokenizer):
    with torch.no_grad():
        return model(tokenizer(PROMPT, return_tensors="pt").input_ids).logits


def test_the_gguf_reader_finds_the_model_the_tokenizer_and_the_chat_template(exported):
    from gguf import GGMLQuantizationType, GGUFReader
    from transformers import AutoTokenizer

    _, files = exported
    config = json.loads((mini_model_dir() / "config.json").read_text())
    reader = GGUFReader(files["Q8_0"])
    field = lambda key: reader.fields[key].contents()
    assert field("general.architecture") == "llama" and field("tokenizer.ggml.pre") == "smollm"
    assert (field("llama.block_count"), field("llama.attention.head_count"), field("llama.attention.head_count_kv")) \
        == (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"])
    tokenizer = AutoTokenizer.from_pretrained(mini_model_dir())
    assert len(field("tokenizer.ggml.tokens")) == config["vocab_size"] == len(tokenizer)
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert "output.weight" not in types  # tied to token_embd, written once
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32  # norms stay F32
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == GGMLQuantizationType.Q8_0
    assert sum(t.n_bytes for t in reader.tensors) == gguf_size(mini_model_dir(), "Q8_0")


def test_transformers_reads_the_f32_file_back_to_the_same_logits(exported):
    """F32: every weight written exactly, q and k permuted for llama.cpp and un-permuted by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, files = exported
    tokenizer = AutoTokenizer.from_pretrained(mini_model_dir())
    original = AutoModelForCausalLM.from_pretrained(mini_model_dir(), dtype=torch.float32).eval()
    read_back = AutoModelForCausalLM.from_pretrained(folder, gguf_file=files["F32"].name, dtype=torch.float32).eval()
    assert torch.equal(logits_of(read_back, tokenizer), logits_of(original, tokenizer))
    gguf_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=files["F32"].name)
    assert gguf_tokenizer(PROMPT).input_ids == tokenizer(PROMPT).input_ids
    messages = [{"role": "user", "content": "List the employees."}]
    assert gguf_tokenizer.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(
        messages, tokenize=False)


def test_q8_0_weights_are_within_half_a_step_of_their_block(exported):
    """Q8_0 is block absmax: 32 values, scale = max|w| / 127 stored in fp16; each value within half a step."""
    from transformers import AutoModelForCausalLM

    folder, files = exported
    original = AutoModelForCausalLM.from_pretrained(mini_model_dir(), dtype=torch.float32).state_dict()
    read_back = AutoModelForCausalLM.from_pretrained(folder, gguf_file=files["Q8_0"].name,
                                                     dtype=torch.float32).state_dict()
    weight, got = original["model.layers.0.mlp.up_proj.weight"], read_back["model.layers.0.mlp.up_proj.weight"]
    blocks = weight.reshape(-1, 32)
    step = (blocks.abs().amax(dim=1, keepdim=True) / 127).half().float()  # the scale as the file stores it
    error = (got.reshape(-1, 32) - blocks).abs()
    assert (error <= step / 2 + blocks.abs() * 2**-10).all()  # + the fp16 scale's rounding, relative to |w|
    assert (error > 0).any()  # quantized: not a copy


def test_an_existing_file_an_adapter_a_4bit_model_and_an_unknown_architecture_are_refused(tmp_path, exported):
    _, files = exported
    with pytest.raises(ValueError, match="exists.*nothing is overwritten"):
        export_gguf(mini_model_dir(), files["F32"], "F32")
    with pytest.raises(ValueError, match="export_type must be one of"):
        export_gguf(mini_model_dir(), tmp_path / "x.gguf", "Q4_K")
    model = tmp_path / "model"
    shutil.copytree(mini_model_dir(), model)
    (model / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="is a LoRA adapter.*merge it into its base first"):
        export_gguf(model, tmp_path / "x.gguf")
    (model / "adapter_config.json").unlink()
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"quantization_config": {"quant_method": "bitsandbytes"}}))
    with pytest.raises(ValueError, match="bitsandbytes model.*16-bit base"):
        export_gguf(model, tmp_path / "x.gguf")
    (model / "config.json").write_text(json.dumps(config | {"architectures": ["MistralForCausalLM"]}))
    with pytest.raises(ValueError, match="MistralForCausalLM is not an architecture this converter knows"):
        export_gguf(model, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("x.gguf*"))


def test_a_disk_without_room_is_refused_before_writing(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(gguf_export.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ValueError, match="GiB free; the Q8_0 file needs about"):
        export_gguf(mini_model_dir(), tmp_path / "x.gguf")
    assert not any(tmp_path.iterdir())


def test_an_export_stopped_half_way_leaves_nothing_behind(tmp_path, monkeypatch):
    from gguf import quants

    real, calls = quants.quantize, {"n": 0}

    def fail_on_the_fifth(data, kind):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # a learner stopping the cell
        return real(data, kind)

    monkeypatch.setattr(quants, "quantize", fail_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(mini_model_dir(), tmp_path / "x.gguf", "Q8_0", progress=False)
    assert not any(tmp_path.iterdir())


def test_the_llama_permutation_is_the_one_llama_cpp_applies():
    """convert_hf_to_gguf.py's permute: rows of each head regrouped from [first half; second half] to pairs."""
    heads, head_dim = 2, 4
    weight = np.arange(heads * head_dim * 3, dtype=np.float32).reshape(heads * head_dim, 3)
    permuted = gguf_export._permute_for_llama(weight, heads)
    for head in range(heads):
        rows = weight[head * head_dim:(head + 1) * head_dim]
        first, second = rows[:head_dim // 2], rows[head_dim // 2:]
        expected = np.stack([first, second], axis=1).reshape(head_dim, 3)  # r0, r2, r1, r3
        assert np.array_equal(permuted[head * head_dim:(head + 1) * head_dim], expected)


def test_lesson_06s_blockwise_absmax_quantizer_writes_q8_0s_bytes_but_for_ties():
    """Q8_0 is the course's own block absmax quantizer with blocks of 32 and the scale stored in fp16: on the
    model's weights its scales give the `gguf` package's bytes exactly, and so do its codes except at ties
    (x / scale = k + 0.5, or within float32 rounding of it): gguf multiplies by 1 / scale where the course divides,
    and rounds half away from zero where torch.round rounds half to even. A handful in millions, one step apart."""
    from gguf import GGMLQuantizationType, quants
    from safetensors.torch import load_file

    from course_utils.quant.integer import blockwise_absmax_quantize

    checked, ties = 0, 0
    for name, weight in load_file(mini_model_dir() / "model.safetensors").items():
        if weight.dim() != 2:
            continue
        codes, scales = blockwise_absmax_quantize(weight, 32)
        theirs = quants.quantize(weight.float().numpy(), GGMLQuantizationType.Q8_0).reshape(-1, 34)
        assert np.array_equal(scales.half().numpy().view(np.uint8).reshape(-1, 2), theirs[:, :2]), name
        ours, their_codes = codes.reshape(-1, 32).numpy(), theirs[:, 2:].copy().view(np.int8)
        scaled = (weight.float().reshape(-1, 32) * (1 / scales[:, None])).numpy()  # gguf multiplies by 1 / scale
        differ = ours != their_codes
        assert np.all(np.abs(np.abs(scaled[differ]) % 1 - 0.5) < 1e-5), name  # only ties differ...
        assert np.all(np.abs(ours[differ].astype(int) - their_codes[differ]) == 1), name  # ...by one step
        checked, ties = checked + weight.numel(), ties + int(differ.sum())
    assert checked > 100_000 and ties < checked * 1e-5


def test_rope_scaling_is_refused_not_dropped(tmp_path):
    """A YaRN or linear-scaled config written as plain RoPE would run and answer wrongly, with no error."""
    model = tmp_path / "model"
    shutil.copytree(mini_model_dir(), model)
    config = json.loads((model / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 100000.0,
                                 "original_max_position_embeddings": 8192}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="yarn rope scaling.*convert_hf_to_gguf.py"):
        export_gguf(model, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("x.gguf*"))


def test_q4_0_keeps_the_output_matrix_in_8_bits_and_a_missing_bos_comes_from_the_config(tmp_path):
    """llama.cpp gives the output matrix (here the tied embedding) more bits than the rest; Qwen's tokenizer names
    no BOS token, its config does."""
    from gguf import GGMLQuantizationType, GGUFReader

    model = tmp_path / "model"
    shutil.copytree(mini_model_dir(), model)
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config | {"bos_token": None}))
    config = json.loads((model / "config.json").read_text())
    reader = GGUFReader(export_gguf(model, tmp_path / "mini-Q4_0.gguf", "Q4_0", progress=False))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["token_embd.weight"] == GGMLQuantizationType.Q8_0  # tied: it is the output matrix
    assert types["blk.0.ffn_up.weight"] == GGMLQuantizationType.Q4_0
    assert reader.fields["tokenizer.ggml.bos_token_id"].contents() == config["bos_token_id"]
