"""The package's public names resolve to the objects they document."""

import importlib

import pytest

import bloodcell


@pytest.mark.parametrize("name", [n for n in bloodcell.__all__ if n != "__version__"])
def test_every_public_name_resolves(name):
    value = getattr(bloodcell, name)
    assert callable(value)


def test_model_registry_names_are_the_factory_functions():
    factory = importlib.import_module("bloodcell.models.factory")
    assert bloodcell.create_model is factory.create_model
    assert "efficientnet_lite0" in [entry.name for entry in bloodcell.list_models()]


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        bloodcell.no_such_thing  # noqa: B018
