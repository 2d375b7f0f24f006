"""Self-checks for the exercises.

Every exercise cell starts as a placeholder (`answer = ...`). Its check says
"not attempted yet" for the untouched placeholder, explains what is wrong for
a wrong answer, and confirms a right one. The checks return a `Feedback` so
the worked solutions can `assert check_...(answer).correct`.

Lesson-specific checks live below the shared machinery, grouped by lesson.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

NOT_ATTEMPTED = "not attempted"
WRONG = "wrong"
CORRECT = "correct"


@dataclass(frozen=True)
class Feedback:
    exercise: str
    status: str  # NOT_ATTEMPTED, WRONG or CORRECT
    message: str

    @property
    def correct(self) -> bool:
        return self.status == CORRECT

    def __str__(self) -> str:
        mark = {NOT_ATTEMPTED: "[ ]", WRONG: "[x]", CORRECT: "[ok]"}[self.status]
        return f"{mark} {self.exercise}: {self.message}"


def is_placeholder(answer: Any) -> bool:
    """The untouched exercise placeholder is `...` (Ellipsis) or None."""
    return answer is Ellipsis or answer is None


def run_check(exercise: str, answer: Any, find_problem: Callable[[Any], str | None],
              success: str = "correct, well done.", quiet: bool = False) -> Feedback:
    """Judge `answer` with `find_problem`, which returns None or what is wrong.

    An exception inside `find_problem` (an answer of the wrong type, say) is
    reported as a wrong answer with the exception's text, not raised.
    """
    if is_placeholder(answer):
        feedback = Feedback(exercise, NOT_ATTEMPTED, "not attempted yet: replace the `...` with your answer and re-run.")
    else:
        try:
            problem = find_problem(answer)
        except Exception as exc:  # the learner's answer may be anything
            problem = f"could not check this answer ({type(exc).__name__}: {exc})."
        feedback = Feedback(exercise, WRONG, problem) if problem else Feedback(exercise, CORRECT, success)
    if not quiet:
        print(feedback)
    return feedback


# ---------------------------------------------------------------------------
# Lesson 01: rank intuition (singular values, energy, rank-k approximation)
# ---------------------------------------------------------------------------

import math as _math  # noqa: E402

import torch as _torch  # noqa: E402


def _as_number(answer: Any) -> float:
    if _torch.is_tensor(answer):
        if answer.numel() != 1:
            raise ValueError(f"expected one number, got a tensor of shape {tuple(answer.shape)}")
        return float(answer.detach().item())
    return float(answer)


def _as_count(answer: Any) -> int:
    value = _as_number(answer)
    if value != int(value):
        raise ValueError(f"expected a whole number, got {value}")
    return int(value)


def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    return _math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def _singular_values(values: Any) -> _torch.Tensor:
    return _torch.as_tensor(values).detach().to(_torch.float64).cpu()


def check_rank_k_error(answer: Any, singular_values: Any, k: int) -> Feedback:
    """Frobenius error of the best rank-k approximation, from the singular values alone."""
    s = _singular_values(singular_values)
    expected = s[k:].square().sum().sqrt().item()

    def find_problem(a):
        value = _as_number(a)
        if _close(value, expected):
            return None
        if _close(value, expected**2):
            return "that is the squared error ||M - M_k||_F^2; take the square root."
        if _close(value, s[k:].sum().item()):
            return "you added the discarded singular values; add their squares, then take the square root."
        if _close(value, s[:k].square().sum().sqrt().item()):
            return "that is the norm of the part you keep (s[:k]); the error is made of the discarded values s[k:]."
        if _close(value, s[k + 1:].square().sum().sqrt().item()) or _close(value, s[k - 1:].square().sum().sqrt().item()):
            return "off by one: with 0-based indexing the top k values are s[:k], so the discarded ones are s[k:]."
        return f"{value:.6g} is not the error; Eckart-Young: ||M - M_k||_F = sqrt(sum of the discarded s_i^2)."

    return run_check("rank-k error", answer, find_problem,
                     success=f"correct: {expected:.6g}, without computing any approximation.")


def check_directions_for_energy(answer: Any, singular_values: Any, fraction: float = 0.9) -> Feedback:
    """Smallest k whose top-k singular directions hold at least `fraction` of the energy."""
    s = _singular_values(singular_values)
    energy = s.square().cumsum(0)
    expected = int((energy < fraction * energy[-1]).sum()) + 1
    plain = s.cumsum(0)
    from_values = int((plain < fraction * plain[-1]).sum()) + 1

    def find_problem(a):
        if isinstance(a, float) and not a.is_integer():
            return "the answer is a number of directions (an integer k), not a fraction."
        value = _as_count(a)
        if value == expected:
            return None
        if value == from_values:
            return "energy is the squared singular value (||M||_F^2 = sum s_i^2); you summed s_i themselves."
        if value == expected - 1:
            return f"one short: with {value} directions the energy is still below {fraction:.0%}. k counts directions (index + 1)."
        if value == expected + 1:
            return f"one too many: {value - 1} directions already hold {fraction:.0%}; find the smallest k."
        return f"{value} directions is not the smallest k holding {fraction:.0%} of sum s_i^2."

    return run_check(f"directions for {fraction:.0%} energy", answer, find_problem,
                     success=f"correct: {expected} of {len(s)} directions.")


def check_factorisation_params(answer: Any, d: int, n: int, k: int) -> Feedback:
    """Parameters of a rank-k factorisation B A of a d x n matrix (B: d x k, A: k x n)."""
    expected = k * (d + n)

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == d * n:
            return "that is the full d x n matrix; count the two factors instead."
        if value == expected + k:
            return "store the singular values inside one factor (A = diag(s) V^T), as LoRA's B A does: no separate k."
        if value == k * d * n:
            return "the factors are d x k and k x n: add their sizes, do not multiply everything."
        if value in (k * d, k * n):
            return "you counted one factor; B is d x k and A is k x n."
        return f"{value} is not the count; B is {d} x {k} and A is {k} x {n}."

    return run_check("factorisation parameters", answer, find_problem,
                     success=f"correct: {expected:,} instead of {d * n:,} ({expected / (d * n):.2%}).")


def check_break_even_rank(answer: Any, d: int, n: int) -> Feedback:
    """Largest k at which a rank-k factorisation has strictly fewer parameters than the d x n matrix."""
    expected = (d * n - 1) // (d + n)  # k (d + n) < d n

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value * (d + n) >= d * n:
            return f"at k={value} the factors hold {value * (d + n):,} parameters, not fewer than {d * n:,}."
        return f"k={value} is smaller than it needs to be: k={value + 1} still saves parameters."

    return run_check("break-even rank", answer, find_problem,
                     success=f"correct: up to k={expected}, just below d n / (d + n) = {d * n / (d + n):.1f}.")


# ---------------------------------------------------------------------------
# Lesson 03: LoRA from scratch (parameter counts, scaling, merging)
# ---------------------------------------------------------------------------


def _linear_shapes(model: Any, target_modules: Any) -> list[tuple[str, int, int]]:
    """(name, in, out) of every nn.Linear whose name ends in a target (LoRA-wrapped or not)."""
    shapes = []
    for name, module in model.named_modules():
        if not isinstance(module, _torch.nn.Linear):
            continue
        name = name.removesuffix(".base_layer")
        if any(name == t or name.endswith("." + t) for t in target_modules):
            shapes.append((name, module.in_features, module.out_features))
    return shapes


def check_lora_trainable_count(answer: Any, model: Any, target_modules: Any, r: int) -> Feedback:
    """Trainable LoRA parameters for rank r on the named modules: r (in + out) per matrix."""
    shapes = _linear_shapes(model, target_modules)
    expected = sum(r * (i + o) for _, i, o in shapes)
    frozen = sum(i * o for _, i, o in shapes)
    first_layer = sum(r * (i + o) for name, i, o in shapes if ".0." in f".{name}.")

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == frozen:
            return "that is the number of weights LoRA leaves frozen; count lora_A (r x in) and lora_B (out x r)."
        if first_layer and value == first_layer:
            return f"that is one decoder layer; the targets appear in {len(shapes)} matrices across all layers."
        if value == expected // 2 or value == sum(r * i for _, i, _ in shapes) or value == sum(r * o for _, _, o in shapes):
            return "you counted one of the two matrices; each target gets lora_A (r x in) and lora_B (out x r)."
        return (f"{value:,} is not the count; look at the in/out features of each target "
                f"(k_proj and v_proj are narrower than q_proj here).")

    return run_check("LoRA trainable parameters", answer, find_problem,
                     success=f"correct: {expected:,} trainable vs {frozen:,} frozen in those matrices.")


def check_rslora_scaling(answer: Any, r: int, lora_alpha: float) -> Feedback:
    """The scaling PEFT applies with use_rslora=True: lora_alpha / sqrt(r)."""
    expected = lora_alpha / _math.sqrt(r)

    def find_problem(a):
        value = _as_number(a)
        if _close(value, expected):
            return None
        if _close(value, lora_alpha / r):
            return "that is plain LoRA's lora_alpha / r; rsLoRA divides by sqrt(r)."
        if _close(value, lora_alpha * _math.sqrt(r)):
            return "rsLoRA divides lora_alpha by sqrt(r); you multiplied."
        if _close(value, _math.sqrt(lora_alpha / r)):
            return "only r goes under the square root: lora_alpha / sqrt(r)."
        return f"{value:.6g} is not lora_alpha / sqrt(r) for r={r}, lora_alpha={lora_alpha}."

    return run_check("rsLoRA scaling", answer, find_problem, success=f"correct: {expected:.6g} (plain LoRA: {lora_alpha / r:.6g}).")


def check_merged_weight(answer: Any, layer: Any) -> Feedback:
    """W + scaling * B A for an unmerged LoRA layer (base_layer, lora_A, lora_B, scaling)."""
    if getattr(layer, "merged", False):
        raise ValueError("pass an unmerged layer: after merge() its base weight already holds the update.")
    with _torch.no_grad():
        W = layer.base_layer.weight.detach().to(_torch.float64)
        BA = layer.lora_B.detach().to(_torch.float64) @ layer.lora_A.detach().to(_torch.float64)
        expected = W + layer.scaling * BA
    scale = expected.abs().max().item()

    def close(x, y):
        return bool(_torch.allclose(x, y, rtol=1e-4, atol=1e-5 * scale))

    def find_problem(a):
        value = _torch.as_tensor(a).detach().to(_torch.float64).cpu()
        if value.shape != expected.shape:
            return (f"shape {tuple(value.shape)}, expected {tuple(expected.shape)} = (out_features, in_features): "
                    "B (out x r) times A (r x in), in that order.")
        if close(value, expected):
            return None
        if close(value, W + BA):
            return f"the update is scaled: W + scaling * B A with scaling = {layer.scaling:.4g}."
        if close(value, layer.scaling * BA):
            return "that is only Delta W = scaling * B A; the merged weight adds it to the frozen W."
        if close(value, W):
            return "that is the frozen W alone; add scaling * B A."
        return "not W + scaling * B A; compute it from layer.base_layer.weight, layer.lora_B, layer.lora_A, layer.scaling."

    return run_check("merged weight", answer, find_problem,
                     success="correct: the merged layer needs one matmul, and gives the adapted outputs.")


# ---------------------------------------------------------------------------
# Lessons 05 and 06: quantization basics, NF4 from scratch
# ---------------------------------------------------------------------------

import math as _math  # noqa: E402,F811  (re-imported so this section stands alone)

import torch as _torch  # noqa: E402,F811


def _q_tensor(answer: Any) -> _torch.Tensor:
    if isinstance(answer, (list, tuple)) or _torch.is_tensor(answer):
        return _torch.as_tensor(answer).detach().cpu().reshape(-1)
    raise ValueError(f"expected a tensor or a list of numbers, got {type(answer).__name__}")


def _q_number(answer: Any) -> float:
    if _torch.is_tensor(answer):
        if answer.numel() != 1:
            raise ValueError(f"expected one number, got a tensor of shape {tuple(answer.shape)}")
        return float(answer.detach().item())
    return float(answer)


def check_int4_absmax_codes(answer: Any, x: Any) -> Feedback:
    """Lesson 05: the int4 absmax codes of x (one scale for the whole tensor, codes -7..7)."""
    x = _torch.as_tensor(x, dtype=_torch.float32).reshape(-1)
    scale = x.abs().max() / 7
    expected = _torch.round(x / scale)

    def find_problem(a):
        codes = _q_tensor(a).float()
        if codes.numel() != x.numel():
            return f"expected {x.numel()} codes, one per value of x, got {codes.numel()}."
        if _torch.equal(codes, expected):
            return None
        if _torch.equal(codes, _torch.round(x / (x.abs().max() / 8))):
            return "the scale is max|x|/7 (codes -7..7, so 0 sits in the middle), not max|x|/8."
        if codes.abs().max() > 7:
            if _torch.equal(codes, _torch.round(x / (x.abs().max() / 127))):
                return "those are int8 codes (scale max|x|/127); int4 keeps 4 bits, so the scale is max|x|/7."
            return "int4 absmax codes lie in -7..7; divide by the scale max|x|/7 before rounding."
        if not _torch.equal(codes, codes.round()):
            return "codes are whole numbers: round x / scale to the nearest integer."
        if _torch.equal(codes, _torch.trunc(x / scale)) or _torch.equal(codes, _torch.floor(x / scale)):
            return "you truncated (or floored) x / scale; round to the nearest integer instead."
        return "not the codes: scale = max|x| / 7, codes = round(x / scale)."

    return run_check("int4 absmax codes", answer, find_problem,
                     success=f"correct: {expected.to(_torch.int8).tolist()}.")


def check_zeropoint_params(answer: Any, x: Any, bits: int = 8) -> Feedback:
    """Lesson 05: (scale, zero_point) of asymmetric quantization of x with `bits` bits."""
    x = _torch.as_tensor(x, dtype=_torch.float32).reshape(-1)
    qmax = 2**bits - 1
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / qmax
    zero_point = round(-low / scale)

    def find_problem(a):
        if not isinstance(a, (tuple, list)) or len(a) != 2:
            return "answer with a pair: (scale, zero_point)."
        s, z = _q_number(a[0]), _q_number(a[1])
        scale_ok = _math.isclose(s, scale, rel_tol=1e-4)
        if scale_ok and z == zero_point:
            return None
        if _math.isclose(s, (high - low) / 2**bits, rel_tol=1e-4):
            return f"the scale divides the range by the number of steps, 2^{bits} - 1 = {qmax}, not by 2^{bits}."
        if _math.isclose(s, max(abs(low), abs(high)) / (2 ** (bits - 1) - 1), rel_tol=1e-4):
            return "that is the absmax (symmetric) scale; zero-point quantization spreads max - min over all codes."
        if not scale_ok:
            return f"the scale should be (max - min) / {qmax}."
        if z == -zero_point:
            return "wrong sign: the zero point is round(-min / scale), the code that stands for 0.0."
        if z != round(z):
            return "the zero point is an integer code: round(-min / scale)."
        return "the scale is right; the zero point is round(-min / scale)."

    return run_check("zero-point parameters", answer, find_problem,
                     success=f"correct: scale {scale:.6g}, zero point {zero_point}.")


def check_blockwise_bits(answer: Any, bits: int, block_size: int, scale_bits: int = 32) -> Feedback:
    """Lesson 05: stored bits per value of block-wise absmax quantization (codes + one scale per block)."""
    expected = bits + scale_bits / block_size

    def find_problem(a):
        value = _q_number(a)
        if _math.isclose(value, expected, rel_tol=1e-6):
            return None
        if _math.isclose(value, bits):
            return "the codes are only part of it: each block also stores its scale."
        if _math.isclose(value, bits + scale_bits):
            return "the scale is shared by the whole block: spread its bits over block_size values."
        if _math.isclose(value, bits + 16 / block_size):
            return f"the scales here are {scale_bits}-bit floats, not 16-bit ones."
        return "bits per value = bits per code + bits of one scale / block size."

    return run_check("bits per value", answer, find_problem, success=f"correct: {expected:g} bits per value.")


def check_nf4_codes(answer: Any, block: Any) -> Feedback:
    """Lesson 06: the NF4 codes (0..15) bitsandbytes gives the values of one block."""
    from .quant import decision_midpoints, nf4_table

    block = _torch.as_tensor(block, dtype=_torch.float32).reshape(-1)
    table = nf4_table()
    midpoints, _ = decision_midpoints(table)
    scaled = block * (1.0 / block.abs().max())
    expected = _torch.searchsorted(midpoints, scaled, side="left")

    def find_problem(a):
        codes = _q_tensor(a).long()
        if codes.numel() != block.numel():
            return f"expected {block.numel()} codes, one per value, got {codes.numel()}."
        if _torch.equal(codes, expected):
            return None
        if codes.min() < 0:
            if _torch.equal(codes + 7, expected):
                return "codes are indices into the sorted table, 0..15 (code 7 is 0.0), not signed numbers."
            return "codes are indices 0..15 into the sorted NF4 table; none is negative."
        if codes.max() > 15:
            return "there are only 16 NF4 levels: codes are 0..15."
        if _torch.equal(codes, _torch.searchsorted(midpoints, block, side="left")):
            return "divide the block by its absmax first: the table spans [-1, 1]."
        return "scale by 1/absmax, then take the index of the nearest level of nf4_table()."

    return run_check("NF4 codes", answer, find_problem, success=f"correct: {expected.tolist()}.")


def check_dq_bits(answer: Any, block_size: int, nested_block_size: int = 256) -> Feedback:
    """Lesson 06: bits per parameter of NF4 with double quantization for a large matrix."""
    expected = 4 + 8 / block_size + 32 / (block_size * nested_block_size)

    def find_problem(a):
        value = _q_number(a)
        if _math.isclose(value, expected, rel_tol=2e-4):
            return None
        if _math.isclose(value, 4 + 32 / block_size, rel_tol=2e-4):
            return "that is without double quantization: with DQ each block scale costs 8 bits, not 32."
        if _math.isclose(value, 4 + 8 / block_size, rel_tol=2e-4):
            return "almost: the 8-bit scales need their own fp32 scale, one per block of 256 scales."
        if _math.isclose(value, 4 + 8 / 64 + 32 / (64 * 256), rel_tol=2e-4) and block_size != 64:
            return f"that is the figure for block size 64; redo it for block size {block_size}."
        return "bits = 4 + 8 / block_size + 32 / (block_size * 256)."

    return run_check("bits with double quantization", answer, find_problem,
                     success=f"correct: {expected:.4f} bits per parameter.")


def check_nf4_dequantized(answer: Any, codes: Any, absmax: Any) -> Feedback:
    """Lesson 06: the values that NF4 codes of one block stand for."""
    from .quant import nf4_table

    codes = _torch.as_tensor(codes).long().reshape(-1)
    absmax = float(_q_number(absmax))
    table = nf4_table()
    expected = table[codes] * absmax

    def find_problem(a):
        values = _q_tensor(a).float()
        if values.numel() != codes.numel():
            return f"expected {codes.numel()} values, one per code, got {values.numel()}."
        if _torch.allclose(values, expected, rtol=1e-5, atol=1e-7):
            return None
        if _torch.allclose(values, table[codes], rtol=1e-5, atol=1e-7):
            return "those are the table entries; multiply by the block's absmax to undo the scaling."
        if _torch.allclose(values, codes.float() * absmax, rtol=1e-5):
            return "a code is an index into nf4_table(), not the value itself: look it up first."
        if _torch.allclose(values, table[codes] / absmax, rtol=1e-5):
            return "multiply by absmax (quantizing divided by it); don't divide again."
        return "dequantized value = nf4_table()[code] * absmax."

    return run_check("NF4 dequantized", answer, find_problem, success=f"correct: {expected.tolist()}.")


# ---------------------------------------------------------------------------
# Lesson 04: LoRA with PEFT (adapter file size, equal budgets, adapter routing)
# ---------------------------------------------------------------------------

_ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
_ALL_LINEAR_TARGETS = _ATTENTION_TARGETS + ("gate_proj", "up_proj", "down_proj")


def _lora_budget(model: Any, target_modules: Any, r: int) -> int:
    return sum(r * (i + o) for _, i, o in _linear_shapes(model, target_modules))


def check_adapter_payload_bytes(answer: Any, model: Any, target_modules: Any, r: int,
                                bytes_per_param: int = 4) -> Feedback:
    """Bytes of tensor data in an adapter file: bytes_per_param x r (in + out) per adapted matrix."""
    shapes = _linear_shapes(model, target_modules)
    if not shapes:
        raise ValueError(f"no nn.Linear in the model matches {list(target_modules)}; check the module names.")
    params = sum(r * (i + o) for _, i, o in shapes)
    expected = bytes_per_param * params
    widest = max(max(i, o) for _, i, o in shapes)
    n_layers = len({name.rsplit(".", 2)[0] for name, _, _ in shapes})

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == params:
            return f"that is the number of parameters; each fp32 parameter takes {bytes_per_param} bytes."
        if value == 8 * expected:
            return "that is the number of bits; divide by 8 for bytes."
        if value == expected // 2:
            return "that would be fp16/bf16 (2 bytes per parameter); the adapter here is saved in fp32 (4 bytes)."
        if n_layers > 1 and value * n_layers == expected:
            return f"that is one decoder layer; the targets appear in all {n_layers} layers."
        if value == bytes_per_param * r * 2 * widest * len(shapes):
            return "not every target is square: v_proj maps 576 -> 192 here, so it has r (576 + 192) parameters."
        if value == bytes_per_param * sum(r * i for _, i, _ in shapes) or \
                value == bytes_per_param * sum(r * o for _, _, o in shapes):
            return "you counted one factor; the file holds lora_A (r x in) and lora_B (out x r) of every target."
        return f"{value:,} bytes is not {bytes_per_param} x r (in + out) summed over the {len(shapes)} adapted matrices."

    return run_check("adapter tensor bytes", answer, find_problem,
                     success=f"correct: {expected:,} bytes ({params:,} parameters x {bytes_per_param}).")


def check_equal_budget_rank(answer: Any, model: Any, all_linear_rank: int) -> Feedback:
    """The attention-only rank whose budget is closest to that of all-linear at `all_linear_rank`."""
    target = _lora_budget(model, _ALL_LINEAR_TARGETS, all_linear_rank)
    per_rank = _lora_budget(model, _ATTENTION_TARGETS, 1)
    if per_rank == 0:
        raise ValueError("the model has no q_proj/k_proj/v_proj/o_proj layers; pass a Llama-style model.")
    expected = min(range(1, 4 * target // per_rank + 2), key=lambda r: abs(r * per_rank - target))

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == all_linear_rank:
            return ("the same rank on fewer matrices is a smaller budget; raise the attention rank until "
                    "r x (sum of in + out over q, k, v, o) matches the all-linear budget.")
        if value <= 0:
            return "a rank is a positive integer."
        return (f"attention-only r={value} has {value * per_rank:,} parameters, all-linear r={all_linear_rank} has "
                f"{target:,}; another rank is closer (compare r x {per_rank:,} with {target:,}).")

    return run_check("equal-budget rank", answer, find_problem,
                     success=f"correct: r={expected} gives {expected * per_rank:,} vs {target:,} parameters.")


def check_adapter_router(answer: Any, min_accuracy: float = 0.95) -> Feedback:
    """A function request -> adapter name ("sql" or "json"), run on the test questions of both tasks."""
    from .data import load_examples

    requests = [(e["question"], task) for task in ("sql", "json") for e in load_examples(task, "test")]

    def find_problem(route):
        if not callable(route):
            return "pass the function itself (answer = route), not its result."
        names = [route(text) for text, _ in requests]
        unknown = sorted({repr(n) for n in names if n not in ("sql", "json")})
        if unknown:
            return f"route returned {', '.join(unknown[:3])}; the adapters are named 'sql' and 'json'."
        if len(set(names)) == 1:
            return f"route sends every request to {names[0]!r}; the other adapter never gets used."
        right = sum(n == task for n, (_, task) in zip(names, requests))
        wrong = [text for n, (text, task) in zip(names, requests) if n != task]
        if right / len(requests) < min_accuracy:
            return (f"{right}/{len(requests)} routed correctly (need {min_accuracy:.0%}); "
                    f"e.g. misrouted: {wrong[0]!r}.")
        return None

    return run_check("adapter router", answer, find_problem,
                     success=f"correct: your router picks the right adapter for the test requests.")


# ---------------------------------------------------------------------------
# Lesson 09: choosing and serving (largest batch, adapters vs merged copies, alpha)
# ---------------------------------------------------------------------------


def _placeholder_pair(answer: Any) -> Any:
    """A pair whose parts are all still `...` counts as not attempted."""
    if isinstance(answer, (tuple, list)) and answer and all(is_placeholder(a) for a in answer):
        return ...
    return answer


def _plan_fits(model: Any, profile: Any, headroom: float, **settings: Any) -> bool:
    from .memory import plan_memory

    return plan_memory(model, profile=profile, **settings).total <= headroom * profile.memory_gib * 1024**3


def largest_fitting_batch(model: Any, profile: Any, headroom: float = 0.9, limit: int = 4096, **settings: Any) -> int:
    """The largest micro-batch for which `plan_memory(model, batch=b, **settings)` fits (0: none).

    Memory grows with the batch, so a doubling search then a bisection finds it.
    """
    if not _plan_fits(model, profile, headroom, batch=1, **settings):
        return 0
    low, high = 1, 2
    while high <= limit and _plan_fits(model, profile, headroom, batch=high, **settings):
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:  # low fits, high does not (or is past the limit)
        mid = (low + high) // 2
        if _plan_fits(model, profile, headroom, batch=mid, **settings):
            low = mid
        else:
            high = mid
    return low


def check_largest_batch(answer: Any, model: Any, profile: Any, headroom: float = 0.9, **settings: Any) -> Feedback:
    """Lesson 09: the largest micro-batch whose memory plan fits in `headroom` of the device."""
    expected = largest_fitting_batch(model, profile, headroom, **settings)
    full_memory = largest_fitting_batch(model, profile, 1.0, **settings)
    no_checkpointing = (largest_fitting_batch(model, profile, headroom, **(settings | {"gradient_checkpointing": False}))
                        if settings.get("gradient_checkpointing") else None)

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == expected + 1:
            return f"batch {value} is the first that does NOT fit; the answer is the last one that does."
        if value == full_memory and full_memory != expected:
            return f"that uses all {profile.memory_gib:.1f} GiB; leave the headroom ({headroom:.0%} usable)."
        if no_checkpointing is not None and value == no_checkpointing:
            return "that is the answer without gradient checkpointing; keep the settings the exercise gives."
        if value > expected:
            return f"batch {value} needs more than {headroom:.0%} of {profile.memory_gib:.1f} GiB; try smaller."
        return f"batch {value} fits, but a larger one does too; keep going up until the plan stops fitting."

    return run_check("largest batch that fits", answer, find_problem,
                     success=f"correct: micro-batch {expected} is the largest that fits.")


def check_adapters_vs_copies(answer: Any, model: Any, memory_gib: float, rank: int = 16, dtype: str = "bf16",
                             headroom: float = 0.9) -> Feedback:
    """Lesson 09: (merged copies, adapters next to one base) that fit in `headroom` x memory (weights only)."""
    from .choose import serving_bytes

    sizes = serving_bytes(model, 1, rank=rank, dtype=dtype)
    usable = headroom * memory_gib * 1024**3
    copies = int(usable // sizes["base"])
    adapters = int((usable - sizes["base"]) // sizes["adapter"]) if usable >= sizes["base"] else 0

    answer = _placeholder_pair(answer)

    def find_problem(a):
        if not isinstance(a, (tuple, list)) or len(a) != 2:
            return "answer with a pair: (number of merged copies, number of adapters next to one base)."
        n_copies, n_adapters = _as_count(a[0]), _as_count(a[1])
        if n_copies != copies:
            if n_copies == int(memory_gib * 1024**3 // sizes["base"]):
                return "merged copies: count only the usable share of memory (the headroom)."
            return f"{n_copies} merged copies is not right: each copy is the whole model ({sizes['base'] / 1024**3:.2f} GiB)."
        if n_adapters != adapters:
            if n_adapters == int(usable // sizes["adapter"]):
                return "adapters: the base model takes its share first; the adapters share what is left."
            return (f"{n_adapters} adapters is not right: each adapter is {sizes['adapter'] / 1024**2:.1f} MiB "
                    "(r (d + k) fp32 values per targeted matrix).")
        return None

    return run_check("adapters vs merged copies", answer, find_problem,
                     success=f"correct: {copies} merged copies, or one base plus {adapters:,} adapters.")


def check_equivalent_alpha(answer: Any, r_old: int, alpha_old: float, r_new: int) -> Feedback:
    """Lesson 09: (alpha for plain LoRA, alpha with rsLoRA) at r_new giving the scale alpha_old / r_old had."""
    scale = alpha_old / r_old
    plain, rs = scale * r_new, scale * _math.sqrt(r_new)

    answer = _placeholder_pair(answer)

    def find_problem(a):
        if not isinstance(a, (tuple, list)) or len(a) != 2:
            return "answer with a pair: (lora_alpha for plain LoRA, lora_alpha with use_rslora=True)."
        a_plain, a_rs = _as_number(a[0]), _as_number(a[1])
        if not _close(a_plain, plain, 1e-3):
            if _close(a_plain, alpha_old):
                return "keeping lora_alpha fixed shrinks the scale alpha / r when r grows; scale alpha with r."
            return f"plain LoRA: the scale is lora_alpha / r; find lora_alpha with lora_alpha / {r_new} = {scale:g}."
        if not _close(a_rs, rs, 1e-3):
            if _close(a_rs, plain):
                return "with use_rslora=True PEFT divides by sqrt(r), not r."
            return f"rsLoRA: the scale is lora_alpha / sqrt(r); find lora_alpha with lora_alpha / sqrt({r_new}) = {scale:g}."
        return None

    return run_check("equivalent lora_alpha", answer, find_problem,
                     success=f"correct: lora_alpha={plain:g} (plain) or {rs:.4g} (rsLoRA) keeps the scale at {scale:g}.")


# ---------------------------------------------------------------------------
# Lesson 08: capstone (making a plan fit, optimizer steps, adapter size of a 7B)
# ---------------------------------------------------------------------------


def check_fitting_change(answer: Any, plan: Any, profile: Any, options: dict) -> Feedback:
    """Which single change in `options` (letter -> plan.replan kwargs) makes `plan` fit `profile`'s GPU."""
    from .hardware import GIB as _GIB

    available = profile.memory_gib * _GIB
    totals = {letter: plan.replan(**change).total for letter, change in options.items()}
    fitting = sorted(letter for letter, total in totals.items() if total <= available)

    def find_problem(a):
        letter = str(a).strip().lower()
        if letter not in options:
            return f"answer with one of the letters {sorted(options)}, e.g. answer = 'a'."
        if letter in fitting:
            return None
        saved = (plan.total - totals[letter]) / _GIB
        return (f"{options[letter]} saves only {saved:.2f} GiB: the plan still needs "
                f"{totals[letter] / _GIB:.2f} GiB of {available / _GIB:.2f}. Look at the largest parts of the plan "
                "(activations grow with batch x seq_len) and which change shrinks them.")

    best = fitting[0] if fitting else None
    success = (f"correct: {options[best]} brings it to {totals[best] / _GIB:.2f} GiB; activations scale with "
               "batch x seq_len, rank and optimizer barely matter next to them." if best else "correct.")
    return run_check("a change that fits", answer, find_problem, success=success)


def check_optimizer_steps(answer: Any, n_examples: int, batch_size: int, grad_accum: int, epochs: int) -> Feedback:
    """Optimizer steps for `epochs` passes over `n_examples` (incomplete micro-batches dropped)."""
    micro_per_epoch = n_examples // batch_size
    expected = epochs * micro_per_epoch // grad_accum

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == epochs * micro_per_epoch:
            return "that counts micro-batches; the optimizer steps once every grad_accum micro-batches."
        if value == micro_per_epoch // grad_accum:
            return "that is one epoch; multiply by the number of epochs."
        if value == epochs * n_examples:
            return "that is the number of examples seen; divide by the effective batch (batch_size x grad_accum)."
        if value == epochs * n_examples * grad_accum // batch_size:
            return "gradient accumulation makes the effective batch larger, so there are fewer steps: divide by it."
        return (f"{value} is not it: one optimizer step consumes batch_size x grad_accum = "
                f"{batch_size * grad_accum} examples.")

    return run_check("optimizer steps", answer, find_problem,
                     success=f"correct: {expected} steps of {batch_size * grad_accum} examples each.")


def _lora_params_from_config(config: Any, rank: int, suffixes: tuple[str, ...]) -> int:
    h, i = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    shapes = {"q_proj": (h, heads * head_dim), "k_proj": (h, kv * head_dim), "v_proj": (h, kv * head_dim),
              "o_proj": (heads * head_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    per_layer = sum(rank * (shapes[s][0] + shapes[s][1]) for s in suffixes)
    return config.num_hidden_layers * per_layer


def check_config_adapter_params(answer: Any, config: Any, rank: int = 16) -> Feedback:
    """LoRA parameters for `rank` on all seven linear layers of every decoder layer of `config`."""
    every = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    expected = _lora_params_from_config(config, rank, every)
    layers = config.num_hidden_layers

    class _NoGQA:  # the same config as if k and v had as many heads as q
        def __init__(self, c):
            self.__dict__.update(c.to_dict() if hasattr(c, "to_dict") else vars(c))
            self.num_key_value_heads = self.num_attention_heads

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == _lora_params_from_config(_NoGQA(config), rank, every):
            return ("k_proj and v_proj are smaller than q_proj: with grouped-query attention their output is "
                    "num_key_value_heads x head_dim, not hidden_size.")
        if value == _lora_params_from_config(config, rank, every[:4]):
            return "that is the attention projections only; all-linear also wraps gate, up and down."
        if value == expected // layers:
            return f"that is one decoder layer; the model has {layers}."
        if value == 4 * expected:
            return "that is the size in bytes (fp32); the question asks for the number of parameters."
        if value == 2 * expected:
            return "twice too many: A (r x k) and B (d x r) together hold r (d + k) per matrix; count them once."
        return f"{value:,} is not it; per wrapped matrix count r (d + k), then sum over 7 matrices and {layers} layers."

    return run_check("adapter parameters", answer, find_problem,
                     success=f"correct: {expected:,} parameters, {4 * expected / 2**20:.0f} MiB in fp32.")


# ---------------------------------------------------------------------------
# Lesson 07: QLoRA mechanics (stored bits of a real layer, 4-bit model size, what stays unquantized)
# ---------------------------------------------------------------------------


def _nf4_stored_tensors(layer: Any) -> tuple[list[_torch.Tensor], int]:
    """The tensors a bitsandbytes 4-bit weight stores (without the two fixed code tables), and its numel."""
    weight = getattr(layer, "weight", layer)
    state = getattr(weight, "quant_state", None)
    if state is None:
        raise ValueError("pass a bitsandbytes Linear4bit layer (or its weight), e.g. model.model.layers[0].mlp.down_proj")
    tensors = [weight.data, state.absmax]
    if getattr(state, "nested", False):
        tensors += [state.state2.absmax, state.offset]
    return tensors, int(_math.prod(state.shape))


def check_layer_stored_bits(answer: Any, layer: Any) -> Feedback:
    """Lesson 07: bits per weight that one NF4 (+DQ) layer stores: packed codes plus its block constants."""
    tensors, numel = _nf4_stored_tensors(layer)
    state = getattr(layer, "weight", layer).quant_state
    stored_bits = sum(t.numel() * t.element_size() * 8 for t in tensors)
    expected = stored_bits / numel
    tables_bits = 8 * (state.code.numel() * state.code.element_size()
                       + (state.state2.code.numel() * state.state2.code.element_size() if state.nested else 0))
    packed = tensors[0].numel()

    def find_problem(a):
        value = _q_number(a)
        if _math.isclose(value, expected, rel_tol=1e-5):
            return None
        if _math.isclose(value, (stored_bits + tables_bits) / numel, rel_tol=1e-5):
            return "you also counted the two code tables (16 and 256 fp32 values): they are format constants; leave them out."
        if _math.isclose(value, stored_bits / packed, rel_tol=1e-5):
            return (f"the packed tensor has {packed:,} bytes holding two 4-bit codes each: divide by the layer's "
                    f"in x out = {numel:,} weights, not by the packed tensor's length.")
        if _math.isclose(value, 4.5, rel_tol=1e-4):
            return "4.5 is NF4 without double quantization; this layer stores its block scales in 8 bits."
        if _math.isclose(value, 4.0, rel_tol=1e-4):
            return "4 bits is the code alone; add the per-block constants (8-bit absmax, fp32 nested absmax, offset)."
        if _math.isclose(value, stored_bits / 8 / numel, rel_tol=1e-5):
            return "that is bytes per weight; multiply by 8 for bits."
        return "bits = 8 x (bytes of weight.data + absmax + state2.absmax + offset) / (in_features x out_features)."

    return run_check("stored bits of one NF4+DQ layer", answer, find_problem,
                     success=f"correct: {expected:.5f} bits per weight.")


def _qlora_base_bytes(config: Any, compute_dtype: Any) -> int:
    from .memory import plan_memory

    return plan_memory(config, method="qlora", compute_dtype=compute_dtype, device="cuda").model_bytes


def check_qlora_model_bytes(answer: Any, config: Any, compute_dtype: Any = None) -> Feedback:
    """Lesson 07: bytes of a model loaded as NF4+DQ with its other parts in `compute_dtype` (default bf16)."""
    from .memory import model_layout

    compute_dtype = compute_dtype or _torch.bfloat16
    expected = _qlora_base_bytes(config, compute_dtype)
    layout = model_layout(config)
    total = layout.total_params
    other_bytes = _torch.empty(0, dtype=compute_dtype).element_size()

    def find_problem(a):
        value = _q_number(a)
        if value <= 0:
            return "a model size is a positive number of bytes."
        if abs(value - expected) <= 0.01 * expected:
            return None
        if abs(value - expected / 2**30) <= 0.01 * expected / 2**30 or abs(value - expected / 1e9) <= 0.01 * expected / 1e9:
            return "answer in bytes, not GiB or GB (the check compares bytes)."
        if abs(value - total / 2) <= 0.02 * total / 2 or abs(value - total * 4.127 / 8) <= 0.02 * total * 4.127 / 8:
            return ("that assumes every parameter is stored in 4 bits; bitsandbytes quantizes only the decoder's "
                    "linear layers: embeddings, lm_head and norms stay in the 16-bit dtype.")
        if abs(value - layout.linear_weight_params / 2) <= 0.03 * layout.linear_weight_params / 2:
            return "that is the 4-bit linear weights alone; add the block constants and the unquantized parts."
        if abs(value - total * other_bytes) <= 0.01 * total * other_bytes:
            return "that is the whole model in 16 bits: the decoder's linear layers are stored in 4 bits."
        return ("ask the planner: plan_memory(config, method='qlora', compute_dtype=...).model_bytes "
                "(base weights + quantization constants + unquantized parts).")

    return run_check("size of the 4-bit model", answer, find_problem,
                     success=f"correct: {expected / 2**30:.2f} GiB ({expected:,} bytes).")


def check_unquantized_fraction(answer: Any, model: Any) -> Feedback:
    """Lesson 07: the fraction of a quantized model's stored bytes that are NOT quantized weights or constants."""
    from .memory import stored_bytes

    parts = stored_bytes(model)
    total = sum(parts.values())
    expected = parts["unquantized"] / total
    seen: set[int] = set()
    params = other = 0
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear_ids = {id(m.weight) for m in model.modules()
                  if isinstance(m, _torch.nn.Linear) and m is not output and m.weight is not None}
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = int(_math.prod(p.quant_state.shape)) if getattr(p, "quant_state", None) is not None else p.numel()
        params += n
        other += 0 if id(p) in linear_ids else n

    def find_problem(a):
        value = _q_number(a)
        if _math.isclose(value, expected, rel_tol=1e-3):
            return None
        if _math.isclose(value, 100 * expected, rel_tol=1e-3):
            return "that is a percentage; give a fraction between 0 and 1."
        if _math.isclose(value, other / params, rel_tol=1e-3):
            return ("that is the fraction of parameters; the question asks about bytes, and an unquantized "
                    "parameter takes 8x the bytes of a 4-bit one.")
        if _math.isclose(value, 1 - expected, rel_tol=1e-3):
            return "that is the quantized part (weights and constants); the question asks for the rest."
        if _math.isclose(value, parts["unquantized"] / (parts["base_weights"] + parts["unquantized"]), rel_tol=1e-3):
            return "the total must include the quantization constants (absmax etc.) too."
        return "fraction = stored_bytes(model)['unquantized'] / sum of all stored bytes."

    return run_check("unquantized fraction", answer, find_problem,
                     success=f"correct: {expected:.1%} of the bytes are not 4-bit.")


# ---------------------------------------------------------------------------
# Lesson 02: the SVD of a real weight update (random baseline, shared rank, adapter size)
# ---------------------------------------------------------------------------

import torch as _torch  # noqa: E402,F811  (re-imported so this section stands alone)


def _energy_directions(singular_values: Any, fraction: float) -> int:
    """Smallest k whose top-k squared singular values hold >= fraction of their sum."""
    s = _torch.as_tensor(singular_values).detach().to(_torch.float64).cpu()
    energy = s.square().cumsum(0)
    return int((energy < fraction * energy[-1]).sum()) + 1


def check_random_baseline(answer: Any, matrix: Any) -> Feedback:
    """A Gaussian matrix with the shape and Frobenius norm of `matrix` (its no-structure twin)."""
    target = _torch.as_tensor(matrix).detach().to(_torch.float64).cpu()
    target_norm = _torch.linalg.matrix_norm(target).item()
    generator = _torch.Generator().manual_seed(12345)
    noise = _torch.randn(target.shape, generator=generator, dtype=_torch.float64)
    reference_dirs = _energy_directions(_torch.linalg.svdvals(noise), 0.9)

    def find_problem(a):
        if not _torch.is_tensor(a):
            return f"expected a torch tensor, got {type(a).__name__}."
        value = a.detach().to(_torch.float64).cpu()
        if tuple(value.shape) != tuple(target.shape):
            if tuple(value.shape) == tuple(target.shape[::-1]):
                return f"shape {tuple(value.shape)} is transposed; use delta.shape = {tuple(target.shape)}."
            return f"shape {tuple(value.shape)}, expected {tuple(target.shape)} (delta.shape)."
        norm = _torch.linalg.matrix_norm(value).item()
        if _torch.allclose(value, target):
            return "that is ΔW itself; the baseline must be random noise with ΔW's norm."
        flat_a, flat_t = value.reshape(-1), target.reshape(-1)
        cosine = (flat_a @ flat_t).abs().item() / max(norm * target_norm, 1e-300)
        if cosine > 0.99:
            return "that is a scaled copy of ΔW: it keeps ΔW's structure; draw fresh Gaussian noise instead."
        if not _math.isclose(norm, target_norm, rel_tol=1e-4):
            if _math.isclose(norm, _math.sqrt(value.numel()), rel_tol=0.05):
                return (f"its Frobenius norm is {norm:.4g} (plain randn), but ΔW's is {target_norm:.4g}: "
                        "multiply the noise by ||ΔW||_F / ||noise||_F.")
            spectral = _torch.linalg.matrix_norm(target, ord=2).item()
            if _math.isclose(_torch.linalg.matrix_norm(value, ord=2).item(), spectral, rel_tol=1e-4):
                return "you matched the largest singular value (spectral norm); match the Frobenius norm instead."
            return (f"its Frobenius norm is {norm:.4g}, ΔW's is {target_norm:.4g}: scale by "
                    "torch.linalg.matrix_norm(delta) / torch.linalg.matrix_norm(noise).")
        dirs = _energy_directions(_torch.linalg.svdvals(value), 0.9)
        if dirs < 0.5 * reference_dirs:
            return (f"90% of its energy sits in {dirs} directions, a Gaussian matrix of this shape needs about "
                    f"{reference_dirs}: this is not unstructured noise. Use torch.randn(delta.shape, generator=gen).")
        return None

    return run_check("random baseline", answer, find_problem,
                     success=f"correct: same shape, Frobenius norm {target_norm:.4g}, energy spread like noise.")


def _spectra_list(spectra: Any) -> list[_torch.Tensor]:
    values = spectra.values() if isinstance(spectra, dict) else spectra
    values = [_torch.as_tensor(s).detach().to(_torch.float64).cpu() for s in values]
    if not values:
        raise ValueError("pass the singular values of at least one matrix (a dict name -> tensor, or a list).")
    return values


def check_shared_rank(answer: Any, spectra: Any, fraction: float = 0.8) -> Feedback:
    """Smallest single rank r at which every matrix's top-r directions hold >= `fraction` of its energy."""
    values = _spectra_list(spectra)
    needed = sorted(_energy_directions(s, fraction) for s in values)
    expected = needed[-1]
    median = needed[(len(needed) - 1) // 2], needed[len(needed) // 2]
    from_values = max(int((s.cumsum(0) < fraction * s.sum()).sum()) + 1 for s in values)
    at_90 = max(_energy_directions(s, 0.9) for s in values) if fraction != 0.9 else None

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value in median and value < expected:
            return (f"{value} is about the median matrix's need; with one shared r the matrix that needs the most "
                    f"directions decides, or it keeps less than {fraction:.0%}.")
        if value == needed[0]:
            return "that is the least any matrix needs; the shared r must satisfy every matrix, so take the largest."
        if value == expected - 1:
            return f"one short: at r={value} some matrix still keeps less than {fraction:.0%}. k counts directions (index + 1)."
        if value == from_values:
            return "energy is the squared singular value (||ΔW||_F^2 = sum s_i^2); you summed s_i themselves."
        if at_90 is not None and value == at_90:
            return f"that is the rank for 90% of the energy; the question asks for {fraction:.0%}."
        if value > expected:
            return f"r={value} works but is not the smallest: r={expected - 1} or less may already do. Check each matrix."
        return f"at r={value} some matrices keep less than {fraction:.0%} of their energy."

    return run_check(f"shared rank for {fraction:.0%}", answer, find_problem,
                     success=f"correct: r={expected} (the median matrix would need only {needed[len(needed) // 2]}).")


def check_adapter_params(answer: Any, shapes: Any, r: int) -> Feedback:
    """Trainable parameters of a rank-r LoRA adapter on matrices of the given (d, k) shapes: sum r (d + k)."""
    shapes = [tuple(int(n) for n in shape) for shape in shapes]
    if not shapes or any(len(shape) != 2 for shape in shapes):
        raise ValueError("shapes must be a non-empty list of (out_features, in_features) pairs.")
    expected = sum(r * (d + k) for d, k in shapes)
    full = sum(d * k for d, k in shapes)
    widest = max(shapes, key=lambda s: s[0] + s[1])

    def find_problem(a):
        value = _as_count(a)
        if value == expected:
            return None
        if value == full:
            return "that is the number of weights in the full matrices; LoRA trains B (d x r) and A (r x k) instead."
        if value == len(shapes) * r * (widest[0] + widest[1]):
            return f"not every target is {widest[0]} x {widest[1]}: v_proj is narrower; use each matrix's own shape."
        if value in {r * (d + k) for d, k in shapes}:
            return f"that is one matrix; add r (d + k) over all {len(shapes)} target matrices."
        if value == expected // 2 or value in (sum(r * d for d, _ in shapes), sum(r * k for _, k in shapes)):
            return "you counted one of the two factors; each matrix gets B (d x r) and A (r x k)."
        return f"{value:,} is not sum r (d + k) over the {len(shapes)} target matrices."

    return run_check("adapter parameters", answer, find_problem,
                     success=f"correct: {expected:,} trainable numbers vs {full:,} in the full matrices "
                             f"({expected / full:.1%}).")
