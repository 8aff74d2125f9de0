"""Engine defects found in review of c445ea7 (issue 9), each pinned by a test that failed there.

Numbers in the test names follow the issue's list. All run on CPU with tiny models; what only a
GPU shows (stream ordering) is checked through the objects that carry the ordering (events).
"""

from __future__ import annotations

import copy
import gc
import io
import pickle
import threading
import weakref

import pytest
import torch
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

import mom
from mom.engine import families, host_guard, pinned
from mom.engine.cache import HostMemoryError, MomCache
from tests.conftest import assert_close, prompt


@pytest.fixture
def llama(tiny_models):
    return tiny_models["tiny-llama"]


def _full_hidden(model, ids):
    with torch.no_grad():
        return model.model(ids).last_hidden_state


# -- 1. the trim flag must not survive an exception raised by the cache factory ----------------
@torch.no_grad()
def test_01_trim_state_does_not_survive_a_failed_cache_factory(llama, monkeypatch):
    ids = prompt(length=30)
    expected = _full_hidden(llama, ids)

    def refuse(*_a, **_k):
        raise HostMemoryError("pretend the host is full")

    monkeypatch.setattr(host_guard, "check_host_memory", refuse)
    with mom.enable(llama, mom.MomConfig(mini_sequences=2, offload="stream")):
        with pytest.raises(HostMemoryError):
            llama(ids, logits_to_keep=1, use_cache=True)
        actual = llama.model(ids).last_hidden_state  # the base model, under the same handle
    assert actual.shape == expected.shape
    assert_close(actual, expected, what="base model after a failed call")


# -- 2. config.output_hidden_states under trim --------------------------------------------------
@torch.no_grad()
def test_02_config_output_hidden_states_turns_trim_off(llama):
    ids = prompt(length=30)
    llama.config.output_hidden_states = True
    try:
        expected = llama(ids, logits_to_keep=1).hidden_states
        with mom.enable(llama, mom.MomConfig(mini_sequences=3)):
            actual = llama(ids, logits_to_keep=1).hidden_states
    finally:
        llama.config.output_hidden_states = False
    assert len(actual) == len(expected)
    for index, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, what=f"hidden state {index}")


# -- 3. trim with a 2-D (FlashAttention-2 style) padding mask ----------------------------------
def _flash_like_attention(module, query, key, value, attention_mask, scaling=None, **_kwargs):
    """What FlashAttention-2 computes, on CPU: a [B, S] padding mask, bottom-right causal."""
    q_len, k_len = query.shape[-2], key.shape[-2]
    allowed = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=allowed, scale=scaling, enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


@pytest.fixture
def flash_like(llama):
    AttentionInterface.register("mom_test_flash", _flash_like_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register("mom_test_flash", flash_attention_mask)
    previous = llama.config._attn_implementation
    llama.config._attn_implementation = "mom_test_flash"
    yield llama
    llama.config._attn_implementation = previous


@torch.no_grad()
def test_03_trim_accepts_a_two_dimensional_padding_mask(flash_like):
    model = flash_like
    ids = prompt(batch=2, length=30, seed=3)
    mask = torch.ones_like(ids)
    ids[0, :6], mask[0, :6] = 0, 0
    expected = model(ids, attention_mask=mask, logits_to_keep=1).logits
    with mom.enable(model, mom.MomConfig(mini_sequences=3)):
        actual = model(ids, attention_mask=mask, logits_to_keep=1).logits
    assert_close(actual, expected, what="last-position logits, 2-D mask")


# -- 4. the cache passed positionally with offload on -------------------------------------------
@torch.no_grad()
def test_04_cache_passed_positionally_with_offload(llama):
    ids = prompt(length=20)
    expected = llama(ids, use_cache=True).logits
    with mom.enable(llama, mom.MomConfig(offload="stream")):
        out = llama(ids, None, None, DynamicCache(config=llama.config), use_cache=True)
    cache = out.cache if "cache" in out else out.past_key_values
    assert isinstance(cache, MomCache)
    assert_close(out.logits, expected, what="logits, positional cache")


# -- 5. a dropped MomCache frees its buffers without the garbage collector ----------------------
@torch.no_grad()
def test_05_a_dropped_cache_is_freed_by_reference_counting(llama):
    with mom.enable(llama, mom.MomConfig(offload="stream")) as handle:
        out = llama(prompt(length=20), use_cache=True)
        cache = out.cache if "cache" in out else out.past_key_values
        held = handle.host_pool.held_bytes
        ref = weakref.ref(cache)
        gc.disable()
        try:
            del out, cache
            assert ref() is None, "the cache is kept alive by a reference cycle"
            assert handle.host_pool.free_bytes == held > 0
        finally:
            gc.enable()


# -- 6. blocks pinned for a failed prefill are reused, not pinned again -------------------------
def test_06_pending_blocks_of_a_failed_prefill_count_as_reserved(monkeypatch):
    made = []
    monkeypatch.setattr(pinned, "_register", lambda block: made.append(block.numel()))
    monkeypatch.setattr(pinned, "_unregister", lambda block: None)
    pool = pinned.HostPool(pin=True)
    pool.reserve([1000, 2000])  # a prefill that then fails before taking anything
    pool.reserve([1000, 2000])  # the retry
    view = pool.lend((1000,), torch.uint8)
    pool.clear()
    assert sorted(made) == [1000, 2000]
    assert view.numel() == 1000


# -- 7. stream ordering: restore waits for in-flight copies; reuse waits for the last copy ------
class _Event:
    def __init__(self, log):
        self.log = log

    def synchronize(self):
        self.log.append("event synchronized")


def test_07_a_returned_block_is_reused_only_after_its_last_copy(monkeypatch):
    log = []
    pool = pinned.HostPool(pin=False)
    view = pool.lend((64,), torch.uint8)
    pool.take_back(view, after=_Event(log))
    again = pool.lend((64,), torch.uint8)
    assert again.data_ptr() == view.data_ptr()
    assert log == ["event synchronized"]


def test_07_clear_waits_for_the_side_stream_before_unpinning(monkeypatch):
    log = []
    monkeypatch.setattr(pinned, "_register", lambda block: None)
    monkeypatch.setattr(pinned, "_unregister", lambda block: log.append("unregister"))
    pool = pinned.HostPool(pin=True, synchronize=lambda: log.append("stream synchronized"))
    pool.take_back(pool.lend((64,), torch.uint8))
    pool.clear()
    assert log == ["stream synchronized", "unregister"]


@torch.no_grad()
def test_07_a_cache_kept_after_restore_refuses_clearly(llama):
    ids = prompt(length=20)
    with mom.enable(llama, mom.MomConfig(offload="stream")):
        out = llama(ids, use_cache=True)
    cache = out.cache if "cache" in out else out.past_key_values
    with pytest.raises(RuntimeError, match="restore"):
        llama(ids[:, -1:], use_cache=True, **{families.cache_in_call(llama, {})[0]: cache})


@torch.no_grad()
def test_07_caches_of_one_handle_share_one_side_stream(llama):
    with mom.enable(llama, mom.MomConfig(offload="stream")):
        first = llama(prompt(length=20), use_cache=True)
        second = llama(prompt(length=20, seed=1), use_cache=True)
    caches = [out.cache if "cache" in out else out.past_key_values for out in (first, second)]
    assert caches[0].copier is caches[1].copier


# -- 9. the host-RAM guard counts only layers that go to the host -------------------------------
@torch.no_grad()
def test_09_host_ram_guard_ignores_sliding_window_layers(tiny_models, monkeypatch):
    model = tiny_models["tiny-mistral"]  # every layer is sliding-window: nothing goes to the host

    class Small:
        available = 64 << 10

    monkeypatch.setattr(host_guard.psutil, "virtual_memory", lambda: Small)
    ids = prompt(length=30)
    expected = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    with mom.enable(model, mom.MomConfig(offload="stream")):
        actual = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(actual, expected)


# -- 14. prompts of different lengths one after another, blocks back in the pool ----------------
@torch.no_grad()
@pytest.mark.parametrize("mode", ["stream", "auto"])
def test_14_prompt_lengths_change_between_calls(llama, mode):
    with mom.enable(llama, mom.MomConfig(offload=mode)):
        for length in (17, 300, 300, 17, 300):
            ids = prompt(length=length, seed=length)
            actual = llama.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
            gc.collect()
            assert actual.shape == (1, length + 3)


# -- 15. one handle from two threads -------------------------------------------------------------
@torch.no_grad()
@pytest.mark.parametrize("mode", ["none", "stream"])
def test_15_two_threads_share_one_handle(llama, mode):
    ids_full, ids_gen = prompt(length=40, seed=5), prompt(length=23, seed=6)
    expected_full = llama(ids_full).logits
    expected_gen = llama.generate(ids_gen, max_new_tokens=4, do_sample=False, pad_token_id=0)
    failures = []

    def full_positions():
        for _ in range(25):
            logits = llama(ids_full).logits
            if logits.shape != expected_full.shape or not torch.allclose(logits, expected_full, atol=1e-5):
                failures.append(("full", tuple(logits.shape)))

    def generating():
        for _ in range(8):
            out = llama.generate(ids_gen, max_new_tokens=4, do_sample=False, pad_token_id=0)
            if not torch.equal(out, expected_gen):
                failures.append(("generate", tuple(out.shape)))

    with mom.enable(llama, mom.MomConfig(mini_sequences=3, offload=mode)):
        threads = [threading.Thread(target=fn) for fn in (full_positions, generating)]
        errors = []
        for thread in threads:
            thread.run = _capturing(thread.run, errors)
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == [] and failures == []


def _capturing(run, errors):
    def wrapped():
        try:
            run()
        except Exception as error:  # noqa: BLE001  -- reported by the test
            errors.append(repr(error))

    return wrapped


# -- 16. copies and saves of a patched model ------------------------------------------------------
@pytest.mark.parametrize("mode", ["none", "stream"])
def test_16_copy_and_save_of_a_patched_model_are_refused_clearly(llama, mode):
    with mom.enable(llama, mom.MomConfig(mini_sequences=2, offload=mode)):
        with pytest.raises(TypeError, match=r"restore\(\)"):
            copy.deepcopy(llama)
        with pytest.raises(TypeError, match=r"restore\(\)"):
            pickle.dumps(llama)
        with pytest.raises(TypeError, match=r"restore\(\)"):
            torch.save(llama, io.BytesIO())
        with pytest.raises(TypeError, match=r"restore\(\)"):
            copy.deepcopy(llama.model.layers[0].mlp)


@torch.no_grad()
def test_16_after_restore_a_copy_is_independent(llama):
    ids = prompt(length=20)
    with mom.enable(llama, mom.MomConfig(mini_sequences=2)):
        pass
    twin = copy.deepcopy(llama)
    twin.lm_head.weight.zero_()
    assert twin(ids).logits.abs().max() == 0
    assert llama(ids).logits.abs().max() > 0
    buffer = io.BytesIO()
    torch.save(llama.state_dict(), buffer)
    assert buffer.tell() > 0
