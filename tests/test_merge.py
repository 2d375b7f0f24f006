"""A shard-by-shard merge equals PEFT's merge_and_unload, and needs about one shard of RAM.

The tiny model is saved in several safetensors shards (as a 7B checkpoint is), a
LoRA adapter with a non-zero update is saved next to it, and the two merges are
compared weight by weight, in fp32 and in bf16 (where the checkpoint is bf16).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from course_utils.merge import base_shards, merge_adapter_shardwise
from course_utils.models import load_model

SHARD = "60MB"


def _checkpoint_and_adapter(folder, dtype):
    base = load_model(dtype=dtype, device="cpu")
    base.save_pretrained(folder / "base", max_shard_size=SHARD)
    torch.manual_seed(0)
    model = get_peft_model(load_model(dtype=dtype, device="cpu"),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)  # as after training: B A is not zero
    model.save_pretrained(folder / "adapter")
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shardwise_merge_equals_merge_and_unload(tmp_path, dtype):
    _checkpoint_and_adapter(tmp_path, dtype)
    assert len(base_shards(tmp_path / "base")) >= 3, "the test needs a sharded checkpoint"
    report = merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    assert report.merged_weights == 30 * 7  # every linear layer of the 30 decoder layers

    reference = PeftModel.from_pretrained(load_model(dtype=dtype, device="cpu"), tmp_path / "adapter").merge_and_unload()
    expected = reference.state_dict()
    merged, original = {}, {}
    for shard in base_shards(tmp_path / "merged"):
        merged |= load_file(tmp_path / "merged" / shard)
        original |= load_file(tmp_path / "base" / shard)
    assert set(merged) <= set(expected) and len(merged) >= len(expected) - 1  # lm_head is tied, stored once
    changed = 0
    for name, tensor in merged.items():
        assert tensor.dtype == dtype, name
        assert torch.equal(tensor, expected[name]), name
        changed += not torch.equal(tensor, original[name])
    assert changed == 30 * 7  # the merge really changed exactly the targeted weights
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert not (tmp_path / "merged.partial").exists()


def test_merge_into_the_wrong_base_is_refused(tmp_path):
    _checkpoint_and_adapter(tmp_path, torch.float32)
    index = json.loads((tmp_path / "base" / "model.safetensors.index.json").read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v == first}
    (tmp_path / "base" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="model it was trained on"):
        merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    assert not (tmp_path / "merged").exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak RSS is read from Linux /proc")
def test_peak_ram_is_about_one_shard(tmp_path):
    """Measured in a fresh process: the merge's peak RSS grows by about one shard, not by the model.

    The peak is Linux's VmHWM, reset just before the merge (ru_maxrss would carry the
    parent's peak into the child).
    """
    _checkpoint_and_adapter(tmp_path, torch.float32)
    total = sum(f.stat().st_size for f in (tmp_path / "base").glob("*.safetensors"))
    script = textwrap.dedent(f"""
        import json
        import torch, safetensors.torch
        from course_utils.merge import merge_adapter_shardwise

        def status(field):  # kB values from /proc/self/status
            line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
            return int(line.split()[1]) * 1024

        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
        before = status("VmRSS")
        report = merge_adapter_shardwise({str(tmp_path / 'base')!r}, {str(tmp_path / 'adapter')!r},
                                         {str(tmp_path / 'merged')!r}, progress=False)
        print(json.dumps({{"growth": status("VmHWM") - before, "largest": report.largest_shard_bytes}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"checkpoint {total / 2**20:.0f} MiB in shards of <= {measured['largest'] / 2**20:.0f} MiB; "
          f"peak RSS grew by {measured['growth'] / 2**20:.0f} MiB")
    assert measured["growth"] < 2.5 * measured["largest"] + 40 * 2**20  # a shard read + written, plus the adapter
    assert measured["growth"] < 0.6 * total  # far from the whole model in memory


# --------------------------------------------------------------------------- nothing lost, nothing silently wrong
# On the mini model (tests/mini_model.py): two layers, saved in several shards, seconds per test.

def _mini_checkpoint_and_adapter(folder, **lora):
    from transformers import AutoModelForCausalLM

    from mini_model import mini_model_dir

    load = lambda: AutoModelForCausalLM.from_pretrained(mini_model_dir(), dtype=torch.float32)
    load().save_pretrained(folder / "base", max_shard_size="100KB")
    torch.manual_seed(0)
    model = get_peft_model(load(), LoraConfig(**({"r": 4, "lora_alpha": 8, "target_modules": "all-linear",
                                                  "task_type": "CAUSAL_LM"} | lora)))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                param.normal_(std=0.02)
    model.save_pretrained(folder / "adapter")
    return load


def _hidden_leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("lora", [{}, {"use_rslora": True}, {"target_modules": ["q_proj", "v_proj"]}],
                         ids=["plain", "rslora", "qv"])
def test_each_supported_setting_equals_peft_merge(tmp_path, lora):
    load = _mini_checkpoint_and_adapter(tmp_path, **lora)
    assert len(base_shards(tmp_path / "base")) >= 2
    merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    expected = PeftModel.from_pretrained(load(), tmp_path / "adapter").merge_and_unload().state_dict()
    merged = {k: v for shard in base_shards(tmp_path / "merged") for k, v in load_file(tmp_path / "merged" / shard).items()}
    assert merged and all(torch.equal(t, expected[k]) for k, t in merged.items())


@pytest.mark.parametrize("lora, named", [
    ({"alpha_pattern": {"v_proj": 16}}, "alpha_pattern"),
    ({"rank_pattern": {"v_proj": 1}}, "rank_pattern"),
    ({"use_dora": True}, "use_dora"),
    ({"bias": "lora_only"}, "bias="),
    ({"target_modules": ["embed_tokens", "q_proj"]}, "LoRA on embeddings"),
    ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa'"),
    ({"init_lora_weights": "olora"}, "init_lora_weights='olora'"),
], ids=["alpha_pattern", "rank_pattern", "dora", "bias", "embeddings", "pissa", "olora"])
def test_settings_a_shardwise_merge_would_get_wrong_are_refused_by_name(tmp_path, lora, named):
    """Measured before this refusal, against merge_and_unload: alpha_pattern 13.8, rank_pattern 3.9 and
    embeddings 7.3 apart on the tiny model, without an error."""
    _mini_checkpoint_and_adapter(tmp_path, **lora)
    with pytest.raises(ValueError, match=named) as refused:
        merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    assert "merge_and_unload" in str(refused.value)
    assert not (tmp_path / "merged").exists() and not _hidden_leftovers(tmp_path)


def test_an_output_folder_that_would_lose_work_is_refused(tmp_path):
    _mini_checkpoint_and_adapter(tmp_path)
    notebook = tmp_path / "results" / "my_notes.ipynb"
    notebook.parent.mkdir()
    notebook.write_text("{}")
    for output, named in ((tmp_path, "contains base_dir"), (tmp_path / "base", "is base_dir"),
                          (tmp_path / "adapter", "is adapter_dir"), (tmp_path / "base" / "merged", "is inside base_dir"),
                          (tmp_path / "results", "no merge wrote"), (notebook, "is a file")):
        with pytest.raises(ValueError, match=named):
            merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", output, progress=False)
    assert notebook.read_text() == "{}" and (tmp_path / "base" / "config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    # an empty folder, then a re-run into the merge's own output: allowed, and nothing left beside it
    (tmp_path / "merged").mkdir()
    first = merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    (tmp_path / "merged" / "tokenizer.json").write_text("{}")  # what lesson 10 adds to its merged folder
    (tmp_path / "merged" / "notes").mkdir()
    (tmp_path / "merged" / "notes" / "model.gguf").write_text("an export")
    again = merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    assert again.merged_weights == first.merged_weights and (tmp_path / "merged" / "course_merge.json").is_file()
    assert (tmp_path / "merged" / "tokenizer.json").read_text() == "{}"  # what was added since is kept
    assert (tmp_path / "merged" / "notes" / "model.gguf").read_text() == "an export"
    assert not _hidden_leftovers(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "merged", target_is_directory=True)
    with pytest.raises(ValueError, match="is a link"):
        merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", link, progress=False)


def test_what_a_killed_merge_left_is_tidied_and_the_earlier_output_restored(tmp_path):
    _mini_checkpoint_and_adapter(tmp_path)
    merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    # killed between moving the earlier output aside and renaming the new one in, with a half-written merge
    aside = tmp_path / ".merged.replaced-x1"
    aside.mkdir()
    (tmp_path / "merged").rename(aside / "merged")
    (aside / "merged" / "my_notes.txt").write_text("kept")  # added by the learner to the earlier output
    (tmp_path / ".merged.merging-x2").mkdir()
    (tmp_path / ".merged.merging-x2" / "model-00001-of-00002.safetensors").write_bytes(b"half")
    merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    assert (tmp_path / "merged" / "course_merge.json").is_file() and not _hidden_leftovers(tmp_path)
    assert (tmp_path / "merged" / "my_notes.txt").read_text() == "kept"  # the earlier output came back first


def _damage(folder, how):
    adapter = folder / "adapter"
    if how == "config":
        (adapter / "adapter_config.json").write_text('{"r": 4, "lora_alpha": ')
    elif how == "truncated":
        data = (adapter / "adapter_model.safetensors").read_bytes()
        (adapter / "adapter_model.safetensors").write_bytes(data[:len(data) // 2])
    elif how == "missing B":
        from safetensors.torch import save_file

        tensors = load_file(adapter / "adapter_model.safetensors")
        save_file({k: v for k, v in tensors.items() if not ("layers.1.self_attn.q_proj" in k and "lora_B" in k)},
                  adapter / "adapter_model.safetensors")
    elif how == "other shapes":
        from safetensors.torch import save_file

        tensors = load_file(adapter / "adapter_model.safetensors")
        save_file({k: torch.cat([v, v], dim=0) if "lora_B" in k else v for k, v in tensors.items()},
                  adapter / "adapter_model.safetensors")


@pytest.mark.parametrize("how, named", [("config", "adapter_config.json is not valid JSON"),
                                        ("truncated", "adapter_model.safetensors cannot be read"),
                                        ("missing B", "but not .*lora_B"),
                                        ("other shapes", "trained on a model of other shapes")])
def test_a_damaged_or_foreign_adapter_is_refused_with_its_file_and_nothing_is_left(tmp_path, how, named):
    _mini_checkpoint_and_adapter(tmp_path)
    merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir()}
    _damage(tmp_path, how)
    with pytest.raises(ValueError, match=named):
        merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir()} == before  # the earlier merge kept
    assert not _hidden_leftovers(tmp_path)


def test_an_adapter_with_tensors_other_than_a_and_b_is_refused(tmp_path):
    """A variant PEFT adds tomorrow (a magnitude, a diagonal, a bias) brings tensors a shard-wise merge would
    ignore: refused by their names, whatever the config says."""
    from safetensors.torch import save_file

    _mini_checkpoint_and_adapter(tmp_path)
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in tensors if k.endswith(".lora_A.weight"))
    save_file(tensors | {key.replace(".lora_A.weight", ".lora_diag"): torch.ones(4)}, weights)
    with pytest.raises(ValueError, match="not LoRA's A or B .*lora_diag"):
        merge_adapter_shardwise(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged", progress=False)
