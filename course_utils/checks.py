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
