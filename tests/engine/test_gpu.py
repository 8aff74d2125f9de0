"""GPU checks of the engine (marker `gpu`; skipped without CUDA). Sized for an 80 GB H100.

- llama-3.1-8b preset, bf16, 64k prompt: mom's last-position logits within bf16 tolerance of
  the unpatched model, identical greedy tokens, and a prefill peak lower by at least the MLP
  intermediates.
- Offload modes on real CUDA streams and pinned memory: identical tokens and logits to a
  GPU-resident DynamicCache, several families, batch 1 and 2.
"""

from __future__ import annotations

import gc

import pytest
import torch

import mom
from mom.engine.cache import MomCache

pytestmark = pytest.mark.gpu


def _free():
    gc.collect()
    torch.cuda.empty_cache()


def _prefill_peak(model, ids):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        logits = model(ids, logits_to_keep=1, use_cache=True).logits
    torch.cuda.synchronize()
    return logits.float(), torch.cuda.max_memory_allocated()


@pytest.fixture(scope="module")
def llama8b():
    model = mom.load("llama-3.1-8b", device="cuda")
    yield model
    del model
    _free()


def test_llama8b_64k_parity_and_peak(llama8b, record_property):
    seq, pieces = 65536, 16
    ids = torch.randint(0, 128000, (1, seq), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    generate = dict(max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0,
                    output_logits=True, return_dict_in_generate=True)
    expected, peak_hf = _prefill_peak(llama8b, ids)
    _free()
    with torch.no_grad():
        tokens_hf = llama8b.generate(ids, **generate)
    for name in ("past_key_values", "cache"):  # drop the 8 GiB cache before measuring mom's peak
        if getattr(tokens_hf, name, None) is not None:
            setattr(tokens_hf, name, None)
    _free()
    with mom.enable(llama8b, mom.MomConfig(mini_sequences=pieces)):
        actual, peak_mom = _prefill_peak(llama8b, ids)
        _free()
        with torch.no_grad():
            tokens_mom = llama8b.generate(ids, **generate)
    _free()
    error = ((actual - expected).abs().max() / expected.abs().max()).item()
    intermediates = 3 * seq * llama8b.config.intermediate_size * 2  # gate, up, act(gate)*up in bf16
    saved = peak_hf - peak_mom
    for key, value in dict(peak_hf_gib=peak_hf / 2**30, peak_mom_gib=peak_mom / 2**30, saved_gib=saved / 2**30,
                           mlp_intermediates_gib=intermediates / 2**30, logits_rel_error=error,
                           tokens_equal=torch.equal(tokens_hf.sequences, tokens_mom.sequences)).items():
        record_property(key, value)
        print(f"{key} = {value}")
    assert error < 2e-2
    assert_same_greedy(tokens_mom, tokens_hf, 5e-2, "llama-3.1-8b 64k")
    assert saved >= intermediates * (1 - 1 / pieces) * 0.9


FAMILIES = [("llama-3.2-1b", {}), ("qwen2.5-7b", {"num_hidden_layers": 3}), ("qwen3-8b", {"num_hidden_layers": 3}),
            ("mistral-7b", {"num_hidden_layers": 3}), ("tiny-phi3", {})]


def assert_same_greedy(actual, expected, rtol: float, what) -> None:
    """Identical tokens, or a divergence only where the reference itself is a near-tie.

    In bf16, the same values laid out differently in memory can pick a different kernel and
    round differently (measured: up to 2% of the largest logit after 11 steps of llama-3.2-1b
    with the cache offloaded, none in fp32); on a random-weight model the top two logits are
    sometimes closer than that. A divergence counts as a tie only if the reference's top-2 margin at that
    step is within 4x the largest logit difference seen there.
    """
    sequences_equal = torch.equal(actual.sequences, expected.sequences)
    for step, (a, e) in enumerate(zip(actual.logits, expected.logits)):
        a, e = a.float(), e.float()
        diff = (a - e).abs().max().item()
        if not torch.equal(a.argmax(-1), e.argmax(-1)):
            top2 = e.topk(2, dim=-1).values
            margin = (top2[..., 0] - top2[..., 1]).min().item()
            assert margin <= 4 * diff, (what, step, margin, diff)
            return
        assert diff <= rtol * e.abs().max().item(), (what, step, diff)
    assert sequences_equal, what


@pytest.mark.parametrize("preset, overrides", FAMILIES, ids=[f[0] for f in FAMILIES])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_offload_modes_exact_on_gpu(preset, overrides, batch, dtype):
    model = mom.load(preset, device="cuda", dtype=dtype, **overrides)
    gen = torch.Generator("cuda").manual_seed(1)
    ids = torch.randint(3, min(model.config.vocab_size, 30000), (batch, 3000), device="cuda", generator=gen)
    mask = torch.ones_like(ids)
    if batch == 2:
        ids[1, :700], mask[1, :700] = 0, 0
    kwargs = dict(attention_mask=mask, max_new_tokens=24, min_new_tokens=24, do_sample=False, pad_token_id=0,
                  output_logits=True, return_dict_in_generate=True)
    layer_bytes = 2 * batch * 3300 * mom.engine.families.kv_bytes_per_token(model) // model.config.num_hidden_layers
    with torch.no_grad():
        expected = model.generate(ids, **kwargs)
        for mode, budget in [("prefill", None), ("stream", None), ("auto", None), ("auto", layer_bytes)]:
            # offload alone moves bytes and never changes arithmetic
            with mom.enable(model, mom.MomConfig(offload=mode, kv_gpu_budget=budget, trim_last_layer=False)):
                actual = model.generate(ids, **kwargs)
            cache = actual.cache if "cache" in actual else actual.past_key_values
            assert isinstance(cache, MomCache)
            if dtype == torch.float32:
                assert torch.equal(actual.sequences, expected.sequences), (preset, mode, budget)
                for a, e in zip(actual.logits, expected.logits):
                    torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
            else:
                assert_same_greedy(actual, expected, 5e-2, (preset, mode, budget, "offload"))
            # with mini-sequences and the trim too
            with mom.enable(model, mom.MomConfig(mini_sequences=4, offload=mode, kv_gpu_budget=budget)):
                actual = model.generate(ids, **kwargs)
            rtol = 1e-4 if dtype == torch.float32 else 5e-2
            assert_same_greedy(actual, expected, rtol, (preset, mode, budget, "full mom"))
    del model
    _free()
