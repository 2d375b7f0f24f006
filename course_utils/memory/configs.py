"""Model configs for the planner: shipped short names, hub ids, files or folders; nothing is downloaded.

`load_config` reads a config and refuses one that lacks the sizes the planner needs,
instead of letting transformers fill them with a default architecture (a 7B Llama).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

# Short names of the configs shipped with the course (course_utils/configs/*.json).
SHIPPED_CONFIGS = {
    "smollm2-135m": "smollm2-135m.json",
    "qwen2.5-1.5b": "qwen2.5-1.5b.json",
    "qwen2.5-7b": "qwen2.5-7b.json",
    "olmo2-7b": "olmo2-7b.json",
    "llama-7b": "llama-7b.json",
    "llama-13b": "llama-13b.json",
    "llama-70b": "llama-70b.json",
}
# Hub ids that map onto a shipped config, so `load_config("Qwen/Qwen2.5-7B-Instruct")` works offline.
HUB_ALIASES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m",
    "Qwen/Qwen2.5-1.5B-Instruct": "qwen2.5-1.5b",
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b",
    "allenai/OLMo-2-1124-7B": "olmo2-7b",
}

# The fields the planner reads. A config without them would be filled with the
# architecture's defaults (Llama's are a 7B model): it is refused instead.
REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
OPTIONAL_SIZE_FIELDS = ("num_key_value_heads", "head_dim")


def _config_from_dict(data: Mapping[str, Any], source: str = "The config dict"):
    from transformers import AutoConfig

    data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_source" notes etc.
    if "model_type" not in data:
        raise ValueError(f"{source} has no 'model_type' (e.g. 'llama', 'qwen2', 'olmo2'); add it.")
    model_type = data.pop("model_type")
    for name in REQUIRED_FIELDS + OPTIONAL_SIZE_FIELDS:
        if data.get(name) is not None:
            _check_size(name, data[name])  # before transformers divides by it
    try:
        config = AutoConfig.for_model(model_type, **data)
    except ValueError:
        raise
    except Exception as exc:  # e.g. transformers' strict field validation: hidden_size=576.0
        raise ValueError(f"{source} is not a valid {model_type} config: {exc}") from None
    aliases = getattr(config, "attribute_map", {}) or {}  # e.g. GPT-2 calls hidden_size n_embd
    missing = [name for name in REQUIRED_FIELDS if name not in data and aliases.get(name) not in data]
    if missing:
        raise ValueError(
            f"{source} lacks {', '.join(missing)}: the planner needs {', '.join(REQUIRED_FIELDS)} "
            f"and never fills them with {model_type}'s defaults (which describe some other model). "
            "Copy them from the model's config.json, or pass a shipped name such as 'qwen2.5-7b'."
        )
    return config


def _check_sizes(config) -> None:
    """Every size the planner multiplies must be a positive integer; say which one is not."""
    for name in REQUIRED_FIELDS + OPTIONAL_SIZE_FIELDS:
        value = getattr(config, name, None)
        if value is not None or name in REQUIRED_FIELDS:
            _check_size(name, value)


def _check_size(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Config field {name} must be a positive integer, got {value!r}; "
                         f"check the config (the tiny model has {name} = {_TINY_SIZES[name]}).")


_TINY_SIZES = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "intermediate_size": 1536,
               "vocab_size": 49152, "num_key_value_heads": 3, "head_dim": 64}


def load_config(name_or_path: Any):
    """A transformers config from a short name, a JSON file, a folder or a cached hub id.

    Accepts a transformers config object (returned unchanged), a dict, one of
    the short names in `SHIPPED_CONFIGS` ("qwen2.5-7b", "llama-70b", ...), a
    path to a config.json-style file, a folder holding config.json, or a hub
    id that is already in the local hub cache (nothing is downloaded). Hub ids
    of the shipped models resolve to the shipped files.
    """
    config = _load_config(name_or_path)
    _check_sizes(config)
    return config


def _load_config(name_or_path: Any):
    from transformers import PretrainedConfig

    if isinstance(name_or_path, PretrainedConfig):
        return name_or_path
    if isinstance(name_or_path, Mapping):
        return _config_from_dict(name_or_path)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"load_config needs a name, a path, a dict or a transformers config, not {type(name_or_path).__name__}.")
    name = str(name_or_path)
    short = HUB_ALIASES.get(name, name.lower())
    if short in SHIPPED_CONFIGS:
        path = CONFIG_DIR / SHIPPED_CONFIGS[short]
        return _config_from_dict(json.loads(path.read_text()), str(path))
    path = Path(name).expanduser()
    if path.is_file():
        return _config_from_dict(_read_json(path), str(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json; pass the folder of a transformers model.")
        return _config_from_dict(_read_json(path / "config.json"), str(path / "config.json"))
    if "/" in name:
        try:
            from huggingface_hub import hf_hub_download

            cached = hf_hub_download(name, "config.json", local_files_only=True)
        except Exception:
            cached = None
        if cached is not None:
            return _config_from_dict(_read_json(Path(cached)), f"{name}'s cached config.json")
    raise ValueError(
        f"Unknown model {name!r}: not a shipped config, a file, a folder or a hub id in the local cache. "
        f"Shipped names: {', '.join(SHIPPED_CONFIGS)}. Or pass a transformers config, a dict, or a path to config.json."
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable JSON config ({exc}); pass a model's config.json.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object; pass a model's config.json.")
    return data
