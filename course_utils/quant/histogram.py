"""A histogram of weights with the levels of a format drawn over it (lessons 06 and 07)."""

from __future__ import annotations

import math

import torch


def plot_histogram_with_levels(ax, values: torch.Tensor, levels: torch.Tensor | None = None,
                               bins: int = 200, title: str = "", normal_fit: bool = False,
                               xlabel: str = "value") -> None:
    """Histogram of `values` (density) with optional vertical lines at `levels` and a fitted normal curve."""
    data = values.detach().float().reshape(-1).cpu()  # matplotlib reads numpy arrays, which live on the CPU
    ax.hist(data.numpy(), bins=bins, density=True, color="tab:blue", alpha=0.6, label="values")
    if normal_fit:
        mean, std = data.mean().item(), data.std().item()
        grid = torch.linspace(data.min().item(), data.max().item(), 400)
        density = torch.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
        ax.plot(grid.numpy(), density.numpy(), color="tab:red", label=f"normal fit (sd {std:.3g})")
    if levels is not None:
        for i, level in enumerate(torch.as_tensor(levels).reshape(-1).tolist()):
            ax.axvline(level, color="black", lw=0.8, alpha=0.7, label="levels" if i == 0 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
