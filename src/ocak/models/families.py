"""Model families and what CTranslate2's converter needs from each.

CTranslate2 4.8's converters read configs the way transformers 4 wrote them.
transformers 5 moved the RoPE settings into ``config.rope_parameters``, which
broke two families the reference design serves:

- Phi-3: the converter reads ``rope_scaling["type"]``, ``config.rope_theta``
  and ``layer.self_attn.rotary_emb.{long,short}_factor``; transformers 5 has
  ``rope_parameters["rope_type"]``, the theta inside it, and one rotary
  embedding on the model.
- GPT-NeoX: the converter reads ``config.rotary_pct`` (now
  ``rope_parameters["partial_rotary_factor"]``) and ignores the RoPE base, so
  a model trained with another base than 10000 would convert wrong.

``normalize`` puts the old names back on the loaded model (nothing on disk
changes) and ``fix_spec`` corrects the converted spec where the converter
ignores a setting. Only torch objects pass through here; torch is imported by
the caller.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ocak.errors import OcakError

GGUF_ROUTE = (
    "Use the GGUF route instead: convert the checkpoint to GGUF with llama.cpp's "
    "convert_hf_to_gguf.py and serve the file with the llama.cpp engine "
    "(`ocak serve --model path/to/model.gguf`)."
)


class UnsupportedFamily(OcakError):
    """A model family CTranslate2 cannot convert."""

    status = 400
    type = "invalid_request_error"
    code = "unsupported_model"


def ct2_loaders() -> dict[str, Any]:
    """CTranslate2's converters, keyed by transformers config class name."""
    from ctranslate2.converters import transformers as ct2t

    return dict(ct2t._MODEL_LOADERS)


def config_class_name(model_type: str) -> str | None:
    """The transformers config class for a ``model_type`` (``phi3`` -> ``Phi3Config``)."""
    from transformers.models.auto import configuration_auto

    name = configuration_auto.CONFIG_MAPPING_NAMES.get(model_type)  # type: ignore[attr-defined]
    return str(name) if name else None


def check_family(model_type: str) -> str:
    """The config class name for ``model_type``; raises ``UnsupportedFamily`` if unconvertible."""
    import ctranslate2

    class_name = config_class_name(model_type)
    loaders = ct2_loaders()
    if class_name is None or class_name not in loaders:
        families = sorted(n.removesuffix("Config") for n in loaders)
        known = f" ({class_name})" if class_name else ""
        raise UnsupportedFamily(
            f"CTranslate2 {ctranslate2.__version__} has no converter for the "
            f"'{model_type}' model family{known}. It converts: {', '.join(families)}. " + GGUF_ROUTE
        )
    return class_name


def _rope(config: Any) -> dict[str, Any]:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_type" not in params and params:
        # Per-layer-type parameters (sliding/full attention): the full-attention ones.
        params = params.get("full_attention") or next(iter(params.values()))
    return dict(params) if isinstance(params, dict) else {}


class ConfigView:
    """``model.config`` as CTranslate2's converter expects it: the real config with some
    attributes overridden (transformers 5 configs validate assignments, so the old
    names cannot be written back onto them)."""

    def __init__(self, base: Any, **overrides: Any) -> None:
        self.__dict__["_base"] = base
        self.__dict__["_overrides"] = overrides

    def __getattr__(self, name: str) -> Any:
        overrides = self.__dict__["_overrides"]
        if name in overrides:
            return overrides[name]
        return getattr(self.__dict__["_base"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__["_overrides"][name] = value


def normalize(model: Any) -> None:
    """Show CTranslate2's converter the config and modules it expects (in memory only)."""
    config = model.config
    model_type = getattr(config, "model_type", "")
    rope = _rope(config)
    # A GGUF checkpoint is loaded dequantized: the converter must not see its quant config.
    overrides: dict[str, Any] = {"quantization_config": None}
    if "rope_theta" in rope and getattr(config, "rope_theta", None) is None:
        overrides["rope_theta"] = rope["rope_theta"]
    if model_type == "phi3":
        overrides.update(_phi3(model, rope))
    elif model_type == "gpt_neox":
        if getattr(config, "rotary_pct", None) is None:
            overrides["rotary_pct"] = float(rope.get("partial_rotary_factor", 1.0))
        if not hasattr(model, "embed_out"):  # renamed lm_head in transformers 5
            model.__dict__["embed_out"] = model.lm_head
    model.__dict__["config"] = ConfigView(config, **overrides)


def _phi3(model: Any, rope: dict[str, Any]) -> dict[str, Any]:
    partial = float(rope.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise UnsupportedFamily(
            f"This Phi-3 variant rotates only part of each head (partial_rotary_factor "
            f"{partial}), which CTranslate2's Phi-3 converter does not support. " + GGUF_ROUTE
        )
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    overrides: dict[str, Any] = {
        "rope_theta": rope.get("rope_theta", getattr(model.config, "rope_theta", 10000.0)),
        "rope_scaling": None,
    }
    if rope_type != "default":
        scaling = {k: v for k, v in rope.items() if k not in ("rope_type", "rope_theta")}
        scaling["type"] = rope_type
        overrides["rope_scaling"] = scaling
    # transformers 5 keeps one rotary embedding on the model; the converter looks per layer.
    factors = SimpleNamespace(
        long_factor=rope.get("long_factor"), short_factor=rope.get("short_factor")
    )
    for layer in model.model.layers:
        if not hasattr(layer.self_attn, "rotary_emb"):
            layer.self_attn.__dict__["rotary_emb"] = factors
    return overrides


def fix_spec(spec: Any, model_type: str, config: Any) -> None:
    """Correct the converted spec where the converter ignores a config setting."""
    if model_type == "gpt_neox":
        import numpy as np

        theta = getattr(config, "rope_theta", None) or _rope(config).get("rope_theta")
        if theta is not None:
            for layer in spec.decoder.layer:
                layer.self_attention.rotary_base = np.float32(theta)
