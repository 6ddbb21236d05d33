"""PNG curves for run directories (loss per step, reward per step). matplotlib, Agg backend."""
from __future__ import annotations

import os
from pathlib import Path


def plot_curves(curves: dict[str, list[float]], path: str | Path, title: str = "", xlabel: str = "step",
                smooth: int = 0) -> Path:
    """One line per named curve; ``smooth`` > 1 adds a moving average. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, values in curves.items():
        values = np.asarray(values, dtype=float)
        if not len(values):
            continue
        ax.plot(values, alpha=0.35 if smooth > 1 else 1.0, label=None if smooth > 1 else name)
        if smooth > 1 and len(values) >= smooth:
            kernel = np.ones(smooth) / smooth
            ax.plot(np.arange(smooth - 1, len(values)), np.convolve(values, kernel, "valid"), label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
