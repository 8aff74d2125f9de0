import pytest

from mom import MomConfig, MomConfigError
from mom.config import check_config


def test_default_is_baseline():
    cfg = MomConfig()
    assert cfg.is_baseline and not cfg.trims_last_layer and cfg.describe() == "baseline"


def test_trim_defaults_on_with_any_mom_feature():
    assert MomConfig(mini_sequences=4).trims_last_layer
    assert not MomConfig(mini_sequences=4, trim_last_layer=False).trims_last_layer
    assert MomConfig(trim_last_layer=True).trims_last_layer


@pytest.mark.parametrize("kwargs, message", [
    (dict(mini_sequences=0), "positive integer"),
    (dict(mini_sequences=-3), "positive integer"),
    (dict(mini_sequence_size=0), "positive integer"),
    (dict(mini_sequences=2.5), "positive integer"),
    (dict(mini_sequences=True), "positive integer"),
    (dict(mini_sequences=4, mini_sequence_size=128), "not both"),
    (dict(offload="disk"), "offload must be one of"),
    (dict(kv_gpu_budget=1 << 30), 'offload="auto"'),
    (dict(offload="auto", kv_gpu_budget=-1), "non-negative"),
    (dict(trim_last_layer="yes"), "trim_last_layer"),
])
def test_bad_configs_say_what_to_do(kwargs, message):
    with pytest.raises(MomConfigError, match=message):
        MomConfig(**kwargs)


@pytest.mark.parametrize("cfg, seq_len, expected", [
    (MomConfig(mini_sequences=4), 100, 25),
    (MomConfig(mini_sequences=3), 100, 34),
    (MomConfig(mini_sequences=500), 100, 1),
    (MomConfig(mini_sequence_size=4096), 100, 4096),
    (MomConfig(), 100, 100),
])
def test_piece_size(cfg, seq_len, expected):
    assert cfg.piece_size(seq_len) == expected


def test_frozen():
    with pytest.raises(AttributeError):
        MomConfig().offload = "auto"


@pytest.mark.parametrize("value, message", [
    (dict(mini_sequences=4), r"got a dict; write mom.MomConfig\(mini_sequences=4\)"),
    ("stream", r"got the string 'stream'; write mom.MomConfig\(offload='stream'\)"),
    ("fast", r"got the string 'fast'; write mom.MomConfig\(mini_sequences=16, offload='auto'\)"),
    (4, r"got int"),
])
def test_check_config_shows_the_config_to_write(value, message):
    with pytest.raises(TypeError, match=message):
        check_config(value)


def test_check_config_passes_configs_and_none():
    cfg = MomConfig(mini_sequences=2)
    assert check_config(cfg) is cfg and check_config(None) is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(mini_sequence=4), r"no field 'mini_sequence'; did you mean 'mini_sequences'\?"),
    (dict(offload_mode="auto"), r"no field 'offload_mode'; did you mean 'offload'\?"),
    (dict(speed=1), r"no field 'speed' \(fields: mini_sequences, "),
])
def test_a_misspelled_field_names_the_closest(kwargs, message):
    with pytest.raises(TypeError, match=message):
        MomConfig(**kwargs)


def test_configs_still_copy_and_pickle():
    import dataclasses
    import pickle

    cfg = MomConfig(mini_sequences=4)
    assert dataclasses.replace(cfg, offload="auto").offload == "auto"
    assert pickle.loads(pickle.dumps(cfg)) == cfg
