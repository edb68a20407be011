"""Models: one registry for timm backbones, paper reproductions, detector nets and classical pipelines."""

from bloodcell.models.factory import create_model, get_model_entry, list_models

__all__ = ["create_model", "get_model_entry", "list_models"]
