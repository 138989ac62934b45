"""The chart of a run: CPU µs per push and p99 latency per setup, side by side, one bar per cell.

matplotlib is installed into the bench's environment by ``bench/run`` (it is no dependency of
jwksgate); without it there is no chart, and ``draw`` says so.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["draw"]


def draw(results: dict[str, Any], path: Path) -> str | None:
    """Write the PNG to ``path``; None when drawn, else why not."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return "matplotlib is not installed (bench/run installs it into .venv)"
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    cells = results["cells"]
    if not cells:
        return "no cell was measured"
    names = list(cells[0]["summary"])
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.6 * len(names) * len(cells) ** 0.5 + 2.5))
    height = 0.8 / len(cells)
    for ax, metric, title in (
        (axes[0], "cpu_us", "CPU µs per request (all the setup's processes)"),
        (axes[1], "p99_ms", "p99 latency, ms (wrk)"),
    ):
        for i, cell in enumerate(cells):
            values = [cell["summary"].get(n, {}).get(metric, 0.0) for n in names]
            ys = [k + i * height for k in range(len(names))]
            ax.barh(ys, values, height=height, label=cell["cell"])
        ax.set_yticks([k + 0.4 - height / 2 for k in range(len(names))])
        ax.set_yticklabels(names)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(title="body-connections", fontsize="small")
    machine = results["machine"]
    fig.suptitle(
        f"jwksgate and its peers, one interleaved run ({results['when']}, "
        f"{machine['nproc']} CPUs, medians of {results['options']['rounds']} rounds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
