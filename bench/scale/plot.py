"""PNG curves for docs/benchmarks.md (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs" / "img"


def curves(name: str, title: str, xlabel: str, x: list[float], panels: list[tuple[str, dict[str, list[float]]]],
           logx: bool = False) -> Path:
    """One figure, one panel per (y label, {series: values}), saved as docs/img/<name>.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels, strict=True):
        for label, ys in series.items():
            ax.plot(x, ys, marker="o", label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    DOCS.mkdir(parents=True, exist_ok=True)
    out = DOCS / f"{name}.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def series(rows: list[dict[str, Any]], *path: str) -> list[float]:
    out = []
    for r in rows:
        v: Any = r
        for p in path:
            v = v[p]
        out.append(float(v))
    return out
