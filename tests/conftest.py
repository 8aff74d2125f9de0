"""Shared fixtures: tiny from-config models, prompts, and the one assert helper."""

from __future__ import annotations

import pytest
import torch

import mom


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_models():
    """One fp32 CPU model per tiny preset, built once per session."""
    return {name: mom.load(name, device="cpu") for name in mom.TINY_PRESETS}


@pytest.fixture(params=mom.TINY_PRESETS)
def tiny_model(request, tiny_models):
    return tiny_models[request.param]


def prompt(batch: int = 1, length: int = 40, seed: int = 0, vocab: int = 500) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=generator)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, what: str = "tensor") -> None:
    """Relative max error within rtol, with a message that says where values differ."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.float() - expected.float()).abs()
    scale = expected.float().abs().max().clamp_min(1e-12)
    worst = diff.max() / scale
    if not worst <= rtol:
        where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        raise AssertionError(
            f"{what}: relative error {worst.item():.3g} > {rtol:g} at {where}: "
            f"{actual.flatten()[diff.argmax()].item()} vs {expected.flatten()[diff.argmax()].item()}"
        )
