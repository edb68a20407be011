"""Models: one registry for timm backbones, paper reproductions and classical pipelines."""

from bloodcell.models.registry import DataConfig, create_model, get_model_entry, list_models, register_model

__all__ = ["DataConfig", "create_model", "get_model_entry", "list_models", "register_model"]
