"""Fixtures for the training tests (helpers live in train_fixtures.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from train_fixtures import TINY_MODEL, make_synthetic_pbc

from bloodcell.train.config import TrainConfig


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A session-wide synthetic dataset (read-only for tests)."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_pbc(root)
    return root


@pytest.fixture
def base_config(synthetic_root, tmp_path) -> TrainConfig:
    """A fast single-thread config on the synthetic set, writing into a fresh run folder."""
    return TrainConfig(
        model=TINY_MODEL, manifest=str(synthetic_root / "manifest.csv"), data_root=str(synthetic_root / "pbc"),
        out=str(tmp_path / "run"), epochs=2, batch_size=8, lr=0.01, weight_decay=0.0, augment="none",
        threads=1, cache=False, seed=0, schedule="constant",
    )


@pytest.fixture
def bloodcell_log(caplog):
    """caplog receiving the ``bloodcell`` loggers' records (INFO and up) even after the CLI stopped their propagation."""
    logger = logging.getLogger("bloodcell")
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test, restored after it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
