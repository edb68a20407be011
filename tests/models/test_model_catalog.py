"""The registry's plain-data catalog (read by `bloodcell models list` without torch) says what the registry holds."""

from __future__ import annotations

import torch

from bloodcell.models import list_models
from bloodcell.models.catalog import CATALOG, CATALOG_CLASSES, PAPER_EXPERIMENTS, normalisation_label


def _registered_by_bloodcell():
    """The registry's own entries (tests register tiny models of their own)."""
    def module(entry):
        return getattr(entry.builder, "func", entry.builder).__module__

    return {e.name: e for e in list_models() if module(e).startswith("bloodcell.")}


def test_the_catalog_lists_every_registered_model_once():
    names = [entry.name for entry in CATALOG]
    assert len(names) == len(set(names))
    assert set(names) == set(_registered_by_bloodcell())


def test_every_catalog_line_matches_its_registry_entry():
    registered = _registered_by_bloodcell()
    for line in CATALOG:
        entry = registered[line.name]
        config = entry.data_config
        assert (line.kind, line.input_size, line.description, line.tags) == (
            entry.kind, config.input_size, entry.description, entry.tags), line.name
        assert line.normalisation == normalisation_label(config.mean, config.std), line.name
        if entry.kind != "torch":
            assert line.params is None, line.name
            continue
        with torch.device("meta"):
            model = entry.builder(num_classes=CATALOG_CLASSES, pretrained=False, input_size=config.input_size)
        assert line.params == sum(p.numel() for p in model.parameters()), line.name


def test_the_papers_experiments_are_the_ones_reproduce_runs():
    from bloodcell.workflows.reproduce import PROTOCOLS

    assert PAPER_EXPERIMENTS == tuple(PROTOCOLS)
    assert {entry.name for entry in CATALOG if "paper" in entry.tags} <= set(PAPER_EXPERIMENTS)
