"""GLIA models: presets registered by name (timm-style)."""
from glia_edge.models.glia import GLIA, GliaConfig, model_from_config
from glia_edge.models.registry import create_model, is_model, list_models, register_model

__all__ = ["GLIA", "GliaConfig", "create_model", "is_model", "list_models", "model_from_config", "register_model"]
