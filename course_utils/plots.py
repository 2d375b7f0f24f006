"""Plot helpers that more than one lesson uses.

Each helper draws on an `ax` you pass in and returns it, so a lesson keeps
control of the figure layout and its title (which should state the finding).
"""

from __future__ import annotations

import torch

from .linalg import energy_fraction


def _as_float64(values) -> torch.Tensor:
    return torch.as_tensor(values).detach().to(torch.float64).cpu()


def plot_singular_values(ax, values, label: str | None = None, normalize: bool = True, **style):
    """Singular values, largest first, on a log scale.

    With `normalize=True` each curve is divided by its largest value, so
    matrices of different norms (a weight update and a random matrix, say)
    can be compared by shape alone.
    """
    values = _as_float64(values)
    if normalize:
        values = values / values[0]
    ax.semilogy(torch.arange(1, len(values) + 1), values, label=label, **style)
    ax.set_xlabel("index i (largest first)")
    ax.set_ylabel("s_i / s_1" if normalize else "singular value s_i")
    if label is not None:
        ax.legend()
    return ax


def plot_cumulative_energy(ax, values, label: str | None = None, fraction: float | None = None, **style):
    """Share of the energy (sum of s_i^2) held by the top-k directions, for every k.

    With `fraction` (say 0.9) a dashed line marks that level, so the k where
    each curve crosses it can be read off.
    """
    energy = energy_fraction(values)
    ax.plot(torch.arange(1, len(energy) + 1), energy, label=label, **style)
    if fraction is not None:
        ax.axhline(fraction, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("k (number of directions kept)")
    ax.set_ylabel("fraction of energy in top k")
    ax.set_ylim(0, 1.02)
    if label is not None:
        ax.legend()
    return ax
