"""Measuring real models in the planner's categories, so a lesson can put prediction and measurement side by side."""

from __future__ import annotations

import torch


def stored_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes a loaded model really holds, in the planner's categories.

    "base_weights": weights of the decoder's linear layers (packed 4-bit,
    int8, or plain); "quant_constants": bitsandbytes' absmax, nested absmax,
    offsets, code tables and int8 row scales (tensors that `parameters()` and
    `get_memory_footprint()` do not see); "unquantized": all other parameters
    and buffers. Tensors sharing storage (tied embeddings) count once.
    """
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear_weights = {id(m.weight) for m in model.modules()
                      if isinstance(m, torch.nn.Linear) and m is not output and m.weight is not None}
    seen: set[int] = set()
    parts = {"base_weights": 0, "quant_constants": 0, "unquantized": 0}

    def add(part: str, tensor: torch.Tensor | None) -> None:
        if tensor is None or not isinstance(tensor, torch.Tensor):
            return
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            return
        seen.add(ptr)
        parts[part] += tensor.numel() * tensor.element_size()

    for param in model.parameters():
        add("base_weights" if id(param) in linear_weights else "unquantized", param)
        state = getattr(param, "quant_state", None)
        while state is not None:  # 4-bit: absmax, code, offset, then the nested state
            for tensor in (state.absmax, state.code, getattr(state, "offset", None)):
                add("quant_constants", tensor)
            state = getattr(state, "state2", None)
        add("quant_constants", getattr(param, "SCB", None))  # int8 row scales
    for buffer in model.buffers():
        add("unquantized", buffer)
    return parts


def saved_activation_bytes(model: torch.nn.Module, input_ids: torch.Tensor,
                           autocast_dtype: torch.dtype | None = None) -> int:
    """Bytes autograd saves for backward in one forward pass with labels = input_ids.

    Counts each storage once and leaves out the model's own parameters and
    buffers, so it measures exactly the "saved" part of `ActivationEstimate`
    (plus autocast's weight copies). It does not see tensors that are merely
    alive (the returned logits) nor the transient buffers of backward.
    """
    own = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    device_type = input_ids.device.type
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            model(input_ids=input_ids, labels=input_ids)
    return sum(saved.values())
