"""matplotlib, headless and loaded on first use, and a figure turned into file bytes."""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: no display, the same bytes on any machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def encode(fig: Any, formats: tuple[str, ...] = ("png",), **savefig: Any) -> dict[str, bytes]:
    """``fig`` as each of ``formats`` (png, pdf), then closed; ``savefig``: matplotlib's own
    options (dpi, bbox_inches)."""
    out = {}
    try:
        for fmt in formats:
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, **savefig)
            out[fmt] = buffer.getvalue()
    finally:
        pyplot().close(fig)
    return out
