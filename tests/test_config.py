import pytest

from mom import MomConfig, MomConfigError


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
