"""Presets are the published architectures: parameter counts match the model cards exactly."""

from __future__ import annotations

import pytest
import torch

import mom
import mom.engine.families
from mom.load import kv_bytes_per_token_of, parameter_count, preset_config

PUBLISHED_PARAMETERS = {
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "qwen2.5-7b": 7_615_616_512,
    "qwen3-8b": 8_190_735_360,
    "mistral-7b": 7_248_023_552,
    "mistral-nemo-12b": 12_247_782_400,
}


@pytest.mark.parametrize("name, parameters", PUBLISHED_PARAMETERS.items())
def test_real_size_presets_match_their_model_cards(name, parameters):
    model = mom.load(name, device="meta", dtype=torch.bfloat16)  # shapes only, nothing allocated
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config._attn_implementation == "sdpa"


def test_tiny_presets_cover_every_family():
    families = {mom.load(name, device="meta").config.model_type for name in mom.TINY_PRESETS}
    assert families == set(mom.FAMILIES)


def test_cpu_defaults():
    model = mom.load("tiny-qwen3")
    assert model.device.type == "cpu" and model.dtype == torch.float32 and not model.training


def test_cuda_asked_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="no CUDA"):
        mom.load("tiny-llama", device="cuda")


def test_a_missing_preset_suggests_the_closest():
    with pytest.raises(KeyError, match="unknown preset 'tiny-lama'; did you mean 'tiny-llama'"):
        mom.PRESETS["tiny-lama"]
    with pytest.raises(KeyError, match="unknown preset 'zzz'; \\(`mom presets`"):
        mom.PRESETS["zzz"]
    assert mom.PRESETS.get("tiny-lama") is None and "tiny-llama" in mom.PRESETS


@pytest.mark.parametrize("name", mom.PRESETS)
def test_the_estimate_load_checks_is_the_built_parameter_count(name):
    """mom.load refuses a too-large model from this estimate, before building: it must be exact."""
    model = mom.load(name, device="meta")
    assert parameter_count(preset_config(name)) == sum(p.numel() for p in model.parameters())
    assert kv_bytes_per_token_of(model.config, torch.float32) == mom.engine.families.kv_bytes_per_token(model)


def test_overrides_reach_the_model():
    model = mom.load("tiny-llama", device="meta", num_hidden_layers=2, max_position_embeddings=64)
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    assert model.config.max_position_embeddings == 64
