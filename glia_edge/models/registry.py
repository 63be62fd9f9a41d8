"""A small model registry after timm's: preset names -> constructors.

``@register_model`` adds a constructor; ``create_model(name, ...)`` builds it and
``list_models("glia_*")`` lists names. A trained weight set is named ``arch.tag`` (e.g.
``glia_vit_tiny.synthetic``); ``create_model`` accepts the arch part.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable

_MODELS: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` under its own name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered preset names matching a shell-style pattern, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    return name.split(".", 1)[0] in _MODELS


def model_entrypoint(name: str) -> Callable[..., Any]:
    arch = name.split(".", 1)[0]
    try:
        return _MODELS[arch]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def create_model(name: str, backbone_weights: str | None = None, **overrides: Any) -> Any:
    """Build a registered GLIA preset.

    Args:
        name: a preset such as ``glia_vit_small``.
        backbone_weights: ``None`` for a randomly initialised backbone (logged), a path to a local
            safetensors/timm checkpoint, or a timm pretrained name (downloaded by timm; a failure
            raises ``BackboneWeightsError``).
        **overrides: fields of ``GliaConfig`` (e.g. ``adapter_dim=32``, ``depth=2``).
    """
    return model_entrypoint(name)(backbone_weights=backbone_weights, **overrides)


def check_model_options(name: str, overrides: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming an unknown preset, an unknown ``GliaConfig`` field or a value of
    the wrong type among ``overrides``: the CLI checks them before preparing data or training."""
    import typing

    from glia_edge.models.glia import GliaConfig

    if not is_model(name):
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(list_models())}")
    hints = typing.get_type_hints(GliaConfig)
    for key, value in overrides.items():
        if key == "local_weights":  # a constructor argument beside the config fields
            continue
        if key not in hints:
            raise ValueError(f"unknown model option {key!r}; options: {', '.join(hints)}")
        if not _fits(value, hints[key]):
            raise ValueError(f"model option {key}={value!r}: expected {_name(hints[key])}")
    # Values of the right type that still cannot build (adapter_heads not dividing adapter_dim, an
    # unknown score head, 2 conv widths...): the preset's config with the overrides, checked whole.
    from dataclasses import replace

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if k != "local_weights"}
    replace(preset_config(name), **fields).validate()


def preset_config(name: str) -> Any:
    """The ``GliaConfig`` a preset builds (without building it)."""
    from glia_edge.models import glia

    base = name.split(".", 1)[0]
    return glia.preset_config(base) if base in glia.PRESET_CONFIGS else glia.GliaConfig()


def _fits(value: Any, hint: Any) -> bool:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)
