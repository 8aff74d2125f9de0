"""mom.predict over several GPUs: imitated devices per layer, each card's peak, the card that runs out."""

from __future__ import annotations

import pytest

import mom
from mom.engine import families
from mom.simulate import GPUS
from mom.simulate.devices import even_split
from mom.simulate.fake import fake_model, model_config

GiB = 1 << 30
H100 = GPUS["H100-80GB"].usable_bytes
AUTO = mom.MomConfig(mini_sequences=16, offload="auto")


@pytest.fixture(scope="module")
def seventy_b_on_two():
    return mom.predict("llama-3.1-70b", AUTO, context=131072, new_tokens=32, gpu="H100-80GB", gpus=2)


def test_70b_fits_two_h100s_card_by_card_and_not_one(seventy_b_on_two):
    p = seventy_b_on_two
    assert not p.oom and p.gpus == 2 and p.device_name == "2x H100-80GB (predicted)"
    assert set(p.peak_by_device) == {"cuda:0", "cuda:1"}
    assert all(50 * GiB < peak <= H100 for peak in p.peak_by_device.values())  # each card holds ~half the weights
    assert p.peak_gpu_bytes == max(p.peak_by_device.values())
    one = mom.predict("llama-3.1-70b", AUTO, context=131072, new_tokens=32, gpu="H100-80GB")
    assert one.oom and "weights do not fit" in one.error


def test_each_layer_runs_and_is_drawn_on_its_own_card(seventy_b_on_two):
    p = seventy_b_on_two
    assert p.layer_devices == ["cuda:0"] * 40 + ["cuda:1"] * 40
    layers = {(e.layer, e.device) for e in p.events if e.module == "layer"}
    assert layers == {(i, p.layer_devices[i]) for i in range(80)}
    assert {e.device for e in p.events if e.module == "embedding"} == {"cuda:0"}
    assert {e.device for e in p.events if e.module == "lm_head"} == {"cuda:1"}
    assert p.device_map["layers"] == [0] * 40 + [1] * 40 and p.device_map["lm_head"] == 1


def test_an_oom_names_the_card_that_ran_out():
    p = mom.predict("llama-3.1-70b", AUTO, context=262144, new_tokens=32, gpus=2)
    assert p.oom and p.oom_kind == "device" and p.oom_event.device == "cuda:0"
    assert p.error.startswith("cuda:0 (H100-80GB #0) ran out")


def test_weights_too_large_for_the_cards_name_the_first_that_overflows():
    p = mom.predict("llama-3.1-70b", context=1024, gpu="custom-40GiB", gpus=2)
    assert p.oom and p.oom_event.module == "weights" and p.oom_event.device == "cuda:0"
    assert "the weights do not fit on cuda:0" in p.error


def test_a_device_map_of_a_model_predicts_its_split():
    hf_config, _ = model_config("llama-3.2-1b")
    layers = len(families.decoder_layers(fake_model(hf_config, "").model))
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": 1, "lm_head": 1,
                  **{f"model.layers.{i}": 0 if i < 4 else 1 for i in range(layers)}}
    given = mom.predict("llama-3.2-1b", context=4096, new_tokens=4, device_map=device_map)
    assert given.layer_devices == ["cuda:0"] * 4 + ["cuda:1"] * (layers - 4) and not given.oom
    even = mom.predict("llama-3.2-1b", context=4096, new_tokens=4, device_map="auto", gpus=2)
    assert even.layer_devices.count("cuda:0") == layers // 2
    assert given.peak_by_device["cuda:0"] < even.peak_by_device["cuda:0"]  # fewer layers, fewer weights


def test_one_gpu_is_the_plain_prediction():
    cfg = mom.MomConfig(mini_sequences=4, offload="auto")
    plain = mom.predict("llama-3.2-1b", cfg, context=8192, new_tokens=4)
    one = mom.predict("llama-3.2-1b", cfg, context=8192, new_tokens=4, gpus=1)
    assert one.peak_gpu_bytes == plain.peak_gpu_bytes and one.peak_by_device == {} and one.layer_devices == []


def test_the_shared_fake_model_is_left_unmarked():
    mom.predict("llama-3.2-1b", context=2048, new_tokens=2, gpus=2)
    hf_config, _ = model_config("llama-3.2-1b")
    model = fake_model(hf_config, "").model
    assert not any("_hf_hook" in module.__dict__ for module in model.modules())


def test_even_split_gives_the_remainder_to_the_first_cards():
    split = even_split(81, 2)
    assert split.layers.count(0) == 41 and split.layers.count(1) == 40
    assert split.parts == {"embedding": 0, "norm": 1, "lm_head": 1}
    assert list(split.layers) == sorted(split.layers)  # contiguous blocks, in order


@pytest.mark.parametrize("kwargs, message", [
    ({"gpus": 0}, "gpus must be a whole number"),
    ({"gpus": 1.5}, "gpus must be a whole number"),
    ({"device_map": "sequential"}, "is not predicted"),
    ({"device_map": {"": 2}, "gpus": 2}, "on GPU 2, but there are 2"),
    ({"device_map": {"": "cpu"}}, "GPUs only"),
    ({"device_map": {"model.layerz": 0}}, "does not have"),
    ({"device_map": {"model.layers": 0, "lm_head": 1}}, "does not place 'model.embed_tokens'"),
])
def test_bad_gpu_counts_and_device_maps_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mom.predict("llama-3.2-1b", context=1024, new_tokens=2, **kwargs)


def test_plan_lists_configurations_per_gpu_count():
    plan = mom.plan("llama-3.1-70b", gpu="H100-80GB", host_bytes=256 * GiB, context=65536, gpus=(1, 2),
                    mini_sequences=8, max_contexts=False)
    assert plan.gpus == [1, 2] and {row.gpus for row in plan.rows} == {2}  # nothing fits one card
    assert {row.gpus for row in plan.rejected} == {1, 2} and len(plan.rows) + len(plan.rejected) == 10
    assert all(len(row.peak_by_device) == 2 and max(row.peak_by_device.values()) <= H100 for row in plan.rows)
    table = plan.table()
    assert "1 or 2x H100-80GB" in table and "GPUs" in table and " / " in table


def test_two_cards_reach_further_than_one():
    one, two = (mom.simulate.max_context("llama-3.2-1b", mom.MomConfig(), "custom-8GiB", resolution=16384, gpus=n)
                for n in (1, 2))
    assert two > one > 0


def test_cli_plan_takes_gpu_counts(tmp_path, capsys):
    import json

    from mom.cli import main

    out = tmp_path / "plan.json"
    code = main(["plan", "--model", "llama-3.2-1b", "--gpu", "custom-8GiB", "--gpus", "1", "2", "--context", "8192", "-M", "4",
                 "--no-max-context", "--json", str(out)])
    assert code == 0 and "1 or 2x custom-8GiB" in capsys.readouterr().out
    assert json.loads(out.read_text())["gpus"] == [1, 2]
    with pytest.raises(SystemExit):
        main(["plan", "--gpus", "0", "--no-max-context"])
    assert "--gpus: must be a positive number" in capsys.readouterr().err
