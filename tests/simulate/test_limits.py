"""physical_max_context: the formula with its terms, and its transients against predictions."""

from __future__ import annotations

import pytest

import mom
from mom.engine.host_guard import HOST_RAM_MARGIN
from mom.simulate import GPUS, physical_max_context, predict
from mom.simulate.fake import model_config
from mom.simulate.limits import kv_bytes_per_token

GiB = 1 << 30


def test_kv_bytes_per_token_of_llama_8b_is_128_kib():
    config, _ = model_config("llama-3.1-8b")
    assert kv_bytes_per_token(config) == 128 * 1024
    assert kv_bytes_per_token(config, batch=2) == 256 * 1024


def test_the_formula_with_given_transients():
    a, b = 2 * GiB, 20_000.0
    limit = physical_max_context("llama-3.1-8b", "H100-80GB", 100 * GiB, transients=(a, b))
    card = GPUS["H100-80GB"]
    expected = (card.usable_bytes - limit.weights_bytes - a + int(HOST_RAM_MARGIN * 100 * GiB)) // (128 * 1024 + b)
    assert limit.tokens == int(expected)
    assert 14 * GiB < limit.weights_bytes < 16 * GiB  # llama-3.1-8b in bf16
    assert limit.usable_host_bytes == int(0.9 * 100 * GiB)
    assert f"{limit.tokens:,} tokens" in limit.formula() and "H100-80GB" in limit.formula()


def test_host_ram_adds_its_usable_share_in_tokens():
    given = (GiB, 10_000.0)
    alone = physical_max_context("llama-3.1-8b", "H100-80GB", 0, transients=given)
    boxed = physical_max_context("llama-3.1-8b", "H100-80GB", 64 * GiB, transients=given)
    added = HOST_RAM_MARGIN * 64 * GiB / (128 * 1024 + 10_000)
    assert abs((boxed.tokens - alone.tokens) - added) <= 1


def test_weights_that_fill_the_card_leave_no_context():
    limit = physical_max_context("llama-3.1-70b", "RTX-4090-24GB", 64 * GiB, transients=(0, 0.0))
    assert limit.weights_bytes > GPUS["RTX-4090-24GB"].usable_bytes
    assert limit.tokens == 0  # 57.6 GiB of usable host RAM does not make up for the missing card


def test_predicted_transients_extrapolate_to_a_longer_prompt():
    """T(S) = a + b S from two stream predictions holds at 4x the longer reference."""
    limit = physical_max_context("llama-3.2-1b", "H100-80GB", 0, mini_sequences=16, new_tokens=4)
    far = predict("llama-3.2-1b", mom.MomConfig(mini_sequences=16, offload="stream"), 262144, 4)
    seen = far.peak_gpu_bytes - far.weights_bytes
    line = limit.transient_bytes + limit.transient_bytes_per_token * 262144
    assert abs(line - seen) <= 0.01 * seen
    assert limit.transient_bytes_per_token > 0


def test_no_configuration_passes_the_limit_on_the_card_alone():
    limit = physical_max_context("llama-3.2-1b", "custom-8GiB", 0, new_tokens=4)
    reach = mom.simulate.max_context("llama-3.2-1b", mom.MomConfig(mini_sequences=16), "custom-8GiB", None,
                                     new_tokens=4, resolution=4096)
    assert reach is not None and reach <= limit.tokens


@pytest.mark.parametrize("arguments", [dict(host_bytes=-1), dict(host_bytes=1.5), dict(mini_sequences=0)])
def test_bad_arguments_are_refused(arguments):
    with pytest.raises(ValueError):
        physical_max_context("llama-3.1-8b", "H100-80GB", **{"host_bytes": 0, **arguments}, transients=(0, 0.0))
