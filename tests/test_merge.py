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
