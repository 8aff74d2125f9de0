"""mom.load(preset, device_map=...): built module by module on each module's device, never whole on the host."""

from __future__ import annotations

import psutil
import pytest
import torch

import mom
from mom.checks import ModelTooLargeError
from tests.conftest import prompt

CPU_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu",
           "model.layers.2": "cpu", "model.norm": "cpu", "lm_head": "cpu"}


def test_a_preset_is_built_on_its_device_map_with_seeded_random_weights():
    model = mom.load("tiny-llama", device_map=CPU_MAP, seed=3)
    again = mom.load("tiny-llama", device_map=CPU_MAP, seed=3)
    assert model.hf_device_map == CPU_MAP and not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs between two loads with the same seed"
    weight = model.model.layers[1].mlp.up_proj.weight
    assert 0.015 < weight.std().item() < 0.025  # transformers' initializer_range, not empty memory
    assert torch.equal(model.model.layers[0].input_layernorm.weight, torch.ones(64))
    single = mom.load("tiny-llama", device="cpu")
    assert torch.equal(model.model.rotary_emb.inv_freq, single.model.rotary_emb.inv_freq)  # recomputed, not empty


@torch.no_grad()
def test_mom_is_exact_on_a_dispatched_preset():
    model = mom.load("tiny-qwen3", device_map=CPU_MAP)
    ids = prompt(length=36, seed=1)
    expected = model.generate(ids, do_sample=False, max_new_tokens=8, min_new_tokens=8, pad_token_id=0)
    with mom.enable(model, mom.MomConfig(mini_sequences=4, offload="stream")):
        actual = model.generate(ids, do_sample=False, max_new_tokens=8, min_new_tokens=8, pad_token_id=0)
    assert torch.equal(actual, expected)


def test_tied_embeddings_stay_tied():
    model = mom.load("tiny-llama", device_map="auto", tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU host 'auto' spreads over the GPUs")
def test_auto_without_gpus_is_the_cpu():
    assert dict(mom.load("tiny-llama", device_map="auto").hf_device_map) == {"": "cpu"}


def test_a_70b_preset_is_never_built_whole_on_the_host():
    """131 GiB of weights: built on its map's devices (here all meta) module by module, the host
    never holds a copy; a from_config on the host would need 131 GiB."""
    before = psutil.Process().memory_info().rss
    model = mom.load("llama-3.1-70b", device_map={"": "meta"}, dtype=torch.bfloat16)
    assert next(model.parameters()).device.type == "meta"
    assert psutil.Process().memory_info().rss - before < 2 << 30


def test_bad_device_maps_say_what_to_do():
    with pytest.raises(ValueError, match="not both"):
        mom.load("tiny-llama", device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="device_map must be one of"):
        mom.load("tiny-llama", device_map="everywhere")
    with pytest.raises(ValueError, match="is not a device"):
        mom.load("tiny-llama", device_map={"": "gpu7"})
    with pytest.raises(ModelTooLargeError, match="more GPUs"):
        mom.load("tiny-llama", device_map={**CPU_MAP, "model.layers.2": "disk"})
