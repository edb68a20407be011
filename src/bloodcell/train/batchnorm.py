"""A network's batch-norm statistics re-estimated on a new domain's unlabelled images (AdaBN, Li et al. 2016).

Each batch-norm layer normalises its inputs with the mean and variance it saw in training. On another lab's
cells (other stain, camera, microscope) those statistics are off; re-estimating them on the lab's cells, with no
label and no weight trained, can move a model's accuracy a lot, either way. :func:`blended` gives the model with
its statistics moved part of the way (``weight`` 0: its own, 1: the lab's alone), so that a label-free rule can
choose how far to go (``workflows.adapt_unlabelled``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The model's batch-norm layers that keep running statistics, in module order."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def lab_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch-norm layer, the mean and variance of its inputs over ``batches`` (normalised model inputs), each
    batch weighted equally; ``model`` is left unchanged. Only the batch-norm layers run in training mode (dropout
    and stochastic depth stay off), and nothing is learned."""
    probe = copy.deepcopy(model).eval()
    layers = batchnorm_layers(probe)
    if not layers:
        raise ValueError("the model has no batch-norm layer to re-estimate")
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches
        layer.train()
    seen = 0
    with torch.no_grad():
        for batch in batches:
            if len(batch) < 2:
                continue  # a batch of one has no variance
            probe(batch)
            seen += 1
    if not seen:
        raise ValueError("re-estimating batch-norm statistics needs a batch of at least 2 images")
    return [(layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]


def blended(model: nn.Module, statistics: list[tuple[torch.Tensor, torch.Tensor]], weight: float) -> nn.Module:
    """A copy of ``model`` in eval mode whose batch-norm statistics are ``weight`` of ``statistics`` (from
    :func:`lab_statistics` of the same model) and ``1 - weight`` of its own."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be within [0, 1], got {weight}")
    out = copy.deepcopy(model).eval()
    layers = batchnorm_layers(out)
    if len(layers) != len(statistics):
        raise ValueError(f"{len(statistics)} statistics for {len(layers)} batch-norm layers")
    with torch.no_grad():
        for layer, (mean, var) in zip(layers, statistics):
            layer.running_mean.mul_(1 - weight).add_(weight * mean)
            layer.running_var.mul_(1 - weight).add_(weight * var)
    return out


def entropy_steps(model: nn.Module, batches: Iterable[torch.Tensor], lr: float = 1e-3,
                  diversity: float = 0.0) -> Iterator[nn.Module]:
    """A copy of ``model`` whose batch-norm scales and shifts take one Adam step (``lr``) per batch of ``batches``
    (normalised model inputs) towards surer predictions, yielded after each step (the same copy, tuned further each
    time). The loss is the mean entropy of the softmax (TENT, Wang et al. 2021) minus ``diversity`` times the entropy
    of the batch's mean prediction (1: SHOT's information maximisation, Liang et al. 2020, which keeps the calls from
    collapsing onto a few classes). The statistics stay the ones ``model`` has (e.g. from :func:`blended`); every
    other weight is frozen."""
    out = copy.deepcopy(model).eval()
    for parameter in out.parameters():
        parameter.requires_grad_(False)
    affine = [p for layer in batchnorm_layers(out) for p in (layer.weight, layer.bias) if p is not None]
    if not affine:
        raise ValueError("the model has no batch-norm scale or shift to tune")
    for parameter in affine:
        parameter.requires_grad_(True)
    optimiser = torch.optim.Adam(affine, lr=lr)
    for batch in batches:
        log_probs = torch.log_softmax(out(batch), dim=1)
        probs = log_probs.exp()
        mean = probs.mean(dim=0)
        loss = -(probs * log_probs).sum(dim=1).mean() + diversity * (mean * torch.log(mean + 1e-12)).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        yield out


def entropy_tuned(model: nn.Module, batches: Iterable[torch.Tensor], lr: float = 1e-3,
                  diversity: float = 0.0) -> nn.Module:
    """``model`` after every step of :func:`entropy_steps` on ``batches`` (a copy; ``model`` is left unchanged)."""
    out = None
    for out in entropy_steps(model, batches, lr, diversity):
        pass
    out = copy.deepcopy(model).eval() if out is None else out  # no batch: no step
    for parameter in out.parameters():
        parameter.requires_grad_(False)
    return out
