"""mom.predict's behaviour: events like a measured run, OOM as a result, inputs, speed figures."""

from __future__ import annotations

import json
import time

import pytest
import torch

import mom
from mom.simulate import GPUS, resolve_gpu, runner
from mom.simulate.probe import AllocatorProbe

GiB = 1 << 30


def test_events_are_those_of_a_measured_run():
    cfg = mom.MomConfig(mini_sequences=4, offload="stream")
    p = mom.predict("llama-3.2-1b", cfg, context=8192, new_tokens=4)
    layers = 16
    assert p.backend == "predicted" and "(predicted)" in p.device_name and not p.oom
    prefill = [e for e in p.events if e.phase == "prefill"]
    assert sorted({e.layer for e in prefill if e.module == "layer"}) == list(range(layers))
    pieces = [e for e in prefill if e.module == "mlp_piece"]
    assert len(pieces) >= 4 * (layers - 1)  # the trimmed last layer runs its MLP on one position
    assert {e.step for e in p.events if e.phase == "decode"} == {1, 2}  # later steps are accounted
    assert p.peak_host_bytes > 0 and p.events[-1].kv_host_bytes + p.events[-1].kv_gpu_bytes > 0
    assert p.weights_bytes == sum(p.layer_weight_bytes) + p.weights_bytes - sum(p.layer_weight_bytes)
    assert p.layer_table().shape[0] == layers


@pytest.mark.parametrize("cfg", [mom.MomConfig(), mom.MomConfig(mini_sequences=4, offload="auto")],
                         ids=["hf", "mom-auto"])
def test_accounted_decode_steps_equal_running_them(cfg, monkeypatch):
    quick = mom.predict("llama-3.2-1b", cfg, context=4096, new_tokens=12)
    monkeypatch.setattr(runner, "RUN_DECODE_STEPS", 11)
    full = mom.predict("llama-3.2-1b", cfg, context=4096, new_tokens=12)
    assert {e.step for e in full.events if e.phase == "decode"} == set(range(1, 12))
    assert quick.peak_gpu_bytes == full.peak_gpu_bytes


def test_weights_that_do_not_fit_are_an_oom_result():
    p = mom.predict("llama-3.1-8b", context=1024, gpu="custom-12GiB")
    assert p.oom and p.oom_kind == "device" and p.oom_event.module == "weights" and p.oom_event.kind == "oom"
    assert p.ttft_s is None and "weights do not fit" in p.error


def test_a_prompt_that_does_not_fit_fails_where_the_memory_runs_out():
    p = mom.predict("llama-3.1-8b", context=131072, gpu="RTX-4090-24GB")
    assert p.oom and p.oom_kind == "device"
    event = p.oom_event
    assert event.phase == "prefill" and event.module in ("attention", "mlp", "layer", "embedding")
    assert event.peak_bytes > GPUS["RTX-4090-24GB"].usable_bytes - 2 * GiB
    assert mom.predict("llama-3.1-8b", mom.MomConfig(mini_sequences=16, offload="stream"), context=131072,
                       gpu="RTX-4090-24GB").oom is False  # what mom is for


def test_host_ram_is_checked_where_the_engine_checks_it():
    cfg = mom.MomConfig(mini_sequences=4, offload="stream")
    assert mom.predict("llama-3.2-1b", cfg, context=65536, host_bytes=2 * GiB).oom_kind == "host"
    assert not mom.predict("llama-3.2-1b", cfg, context=65536, host_bytes=4 * GiB).oom
    auto = mom.MomConfig(mini_sequences=4, offload="auto")  # what stays on the GPU needs no host RAM
    assert not mom.predict("llama-3.2-1b", auto, context=65536, host_bytes=2 * GiB).oom
    assert mom.predict("llama-3.2-1b", auto, context=65536, host_bytes=2 * GiB, gpu="custom-4GiB").oom_kind == "host"


def test_model_given_as_config_file_folder_or_object(tmp_path):
    from mom.load import preset_config

    reference = mom.predict("llama-3.2-1b", context=2048).peak_gpu_bytes
    config = preset_config("llama-3.2-1b")
    config.save_pretrained(tmp_path)
    model = mom.load("llama-3.2-1b", device="meta", dtype=torch.bfloat16)
    for given in (config, str(tmp_path), str(tmp_path / "config.json"), model):
        assert mom.predict(given, context=2048).peak_gpu_bytes == reference
    with pytest.raises(ValueError, match="not a mom preset"):
        mom.predict("no-such-model-anywhere", context=2048)
    with pytest.raises(ValueError, match="did you mean 'llama-3.1-70b'"):
        mom.predict("llama-3.1-70", context=2048)


def test_a_prediction_is_plain_data_with_its_calibration():
    p = mom.predict("llama-3.2-1b", context=2048)
    data = json.loads(json.dumps(p.to_dict()))
    assert data["calibration"]["unseen_bytes"] > 0 and "source" in data["calibration"]
    assert data["gpu"] == "H100-80GB" and data["backend"] == "predicted"


def test_speed_ranges_and_cards():
    h100 = mom.predict("llama-3.1-8b", context=32768)
    l40s = mom.predict("llama-3.1-8b", context=32768, gpu="L40S-48GB")
    assert l40s.ttft_s > 2 * h100.ttft_s
    low, high = h100.ttft_range_s
    assert low < h100.ttft_s < high
    stream = mom.predict("llama-3.1-8b", mom.MomConfig(mini_sequences=8, offload="stream"), context=32768)
    assert stream.decode_tokens_per_s < h100.decode_tokens_per_s
    assert any("host-link" in note for note in stream.speed_notes)
    small = mom.predict("llama-3.2-1b", context=4096)
    assert any("host-bound" in note for note in small.speed_notes)  # a 1B model: kernel launches bound it


def test_gpu_names_sizes_and_errors():
    assert resolve_gpu("h100-80gb") is GPUS["H100-80GB"]
    assert resolve_gpu("custom-24GiB").total_bytes == 24 * GiB
    assert resolve_gpu(16 * GiB).usable_bytes == 16 * GiB - GPUS["H100-80GB"].context_bytes
    with pytest.raises(ValueError, match="known: H100-80GB"):
        resolve_gpu("H100-81GB")


def test_the_allocator_probe_frees_what_dies():
    probe = AllocatorProbe(capacity=None)
    with probe:
        x = torch.empty(1 << 20, device="meta")
        y = x * 2
        assert probe.allocated() == 2 * (4 << 20)
        del y
        assert probe.allocated() == 4 << 20
        with probe.host_tier():
            h = torch.empty(1 << 20, device="meta")
        assert probe.allocated() == 4 << 20 and probe.host_allocated() == 4 << 20
    del x, h
    assert probe.allocated() == 0 and probe.host_allocated() == 0


def test_a_128k_prediction_takes_seconds():
    # pieces of 8192 tokens: what M=16 means at 128k (M=16 itself is slower today: the engine's fused
    # prefill re-splits each piece's norm into 16 sub-pieces, 15,890 RMSNorm calls instead of 1,010)
    cfg = mom.MomConfig(mini_sequence_size=8192, offload="auto")
    mom.predict("llama-3.1-8b", cfg, context=8192)  # builds the model once
    start = time.perf_counter()
    p = mom.predict("llama-3.1-8b", cfg, context=131072)
    # ~1 s on an idle 2-core CPU; the bound leaves room for a busy CI machine, not for a 10x slip
    # (FakeTensorMode instead of the meta device took 17 s)
    assert not p.oom and time.perf_counter() - start < 10


def test_the_plot_builders_draw_a_prediction_and_its_wall():
    from mom.explore import plots

    p = mom.predict("llama-3.1-8b", context=262144)  # hf: out of memory in layer 23's MLP, as on the H100
    failed = plots.failed_allocation(p)
    assert failed is p.oom_event and failed.layer == 23 and failed.requested_bytes == 7 * GiB
    assert plots.layer_figure(p.events, plots.weights_from_profile(p)).data
    assert plots.timeline_figure(p.events, p.device_limit_bytes).data


def test_engine_warnings_during_a_prediction_are_kept_not_logged(caplog):
    """A plan's search runs dozens of predictions: what the engine warns of on fake tensors goes
    to the Prediction's engine_notes, not to the user's log, and logging is as it was after."""
    import logging

    engine_log = logging.getLogger("mom.engine.cache")

    def warn_once(event, said=[]):  # noqa: B006  (the engine's own warning, from inside the run)
        if not said:
            said.append(True)
            engine_log.warning("mom cache: layer %d does not fit on the GPU after all; streaming it", 7)

    with caplog.at_level(logging.WARNING):
        prediction = mom.predict("tiny-llama", mom.MomConfig(offload="auto"), context=256, new_tokens=2,
                                 gpu="H100-80GB", listeners=(warn_once,))
    assert prediction.engine_notes == ["mom cache: layer 7 does not fit on the GPU after all; streaming it"]
    assert not [r for r in caplog.records if r.name.startswith("mom.engine")]
    assert logging.getLogger("mom.engine").propagate and not logging.getLogger("mom.engine").handlers
    with caplog.at_level(logging.WARNING):
        engine_log.warning("after")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("mom.engine")] == ["after"]


def test_a_head_size_no_run_calibrated_widens_the_ttft_range_and_says_so():
    cfg = mom.MomConfig(mini_sequences=16, offload="auto")
    small = mom.predict("llama-3.2-1b", cfg, context=131072, new_tokens=2)  # head_dim 64
    low, high = small.ttft_range_s
    assert low == pytest.approx(0.85 * small.ttft_s) and high > 1.3 * small.ttft_s  # attention is most of it at 128k
    assert any("attention at head_dim 64" in note for note in small.speed_notes)
    calibrated = mom.predict("llama-3.1-8b", cfg, context=131072, new_tokens=2)  # head_dim 128
    assert calibrated.ttft_range_s[1] == pytest.approx(1.15 * calibrated.ttft_s)
    assert not any("head_dim" in note for note in calibrated.speed_notes)
