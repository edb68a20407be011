"""Models: one registry for timm backbones, paper reproductions, detector nets and classical pipelines.

Importing the package is light (``bloodcell models list`` reads :mod:`bloodcell.models.catalog`);
``create_model``, ``get_model_entry`` and ``list_models`` import :mod:`bloodcell.models.factory`
(torch, timm and every registering module) on first use.
"""

__all__ = ["create_model", "get_model_entry", "list_models"]


def __getattr__(name: str):
    if name in __all__:
        from bloodcell.models import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
