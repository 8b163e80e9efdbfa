"""napari front end: readers, writers, sample data, layer conversion and widgets. The only package that imports
napari/Qt."""

from __future__ import annotations

import os
import sys


def _keep_triton_out() -> None:
    """Stop torch from loading Triton inside the napari process.

    Triton ships its own LLVM; loaded after Mesa's OpenGL (Xvfb, llvmpipe, Intel/AMD drivers), which also links
    LLVM, it crashes the process with a segmentation fault the moment torchvision's models are imported. The
    plugin never uses ``torch.compile``, so torch's fallback without Triton loses nothing. Set
    ``BLOODCELL_ALLOW_TRITON=1`` to opt out.
    """
    if "triton" not in sys.modules and os.environ.get("BLOODCELL_ALLOW_TRITON") != "1":
        sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError


_keep_triton_out()
