"""Every careless input gets a clear answer from mom, before any heavy work starts.

Each case asserts four things: the exception type; that the message names the problem and the
way out; that it was raised by mom (the traceback's last frame is in mom/, not in torch or
transformers); and that it came before any model was built or any prompt ran (building and
generating are made to fail loudly while the case runs). CLI cases assert exit status 2 and
one line on stderr, with the same guard on heavy work.
"""

from __future__ import annotations

import math
import socket
import time
import warnings
from pathlib import Path

import pytest
import torch
import transformers

import mom
from mom import checks
from mom.cli import build_parser, main
from mom.load import parameter_count, preset_config
from mom.memory.events import GiB

MOM_DIR = Path(mom.__file__).resolve().parent


class HeavyWork(AssertionError):
    """A model build, a download or a prompt started although the input was wrong."""


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Building a model, loading weights, generating or connecting to the network raises HeavyWork."""
    def refuse(what):
        def fail(*args, **kwargs):
            raise HeavyWork(f"{what} started before the input was checked")
        return fail

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", refuse("a model build"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse("a download"))
    monkeypatch.setattr(transformers.GenerationMixin, "generate", refuse("a prompt"))
    monkeypatch.setattr(socket, "create_connection", refuse("a network connection"))


@pytest.fixture(scope="module")
def llama():
    return mom.load("tiny-llama")


def raised(error_type, call, *words):
    """Run `call`; assert the error type, that each word (regex) is in its message, and that mom raised it."""
    with pytest.raises(error_type) as info:
        call()
    message = str(info.value)
    for word in words:
        assert _search(word, message), f"{word!r} not in the message: {message}"
    last = Path(str(info.traceback[-1].path)).resolve()
    assert MOM_DIR in last.parents, f"raised from {last}, not from mom: {message}"
    assert "\n" not in message, f"not one line: {message}"
    return message


def _search(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


# -- mom.load --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, words", [
    ("tiny-lama", ["unknown preset 'tiny-lama'", "did you mean 'tiny-llama'", "mom presets"]),
    ("tiny-qwen", ["did you mean 'tiny-qwen[23]'", "mom presets"]),
    ("Llama-3.1-8B", ["did you mean 'llama-3.1-8b'"]),
    ("not a model", ["not a mom preset", "local path", "org/name", "mom presets"]),
    ("gpt2", ["not a mom preset", "org/name", "mom presets"]),
])
def test_a_name_that_is_no_model_is_answered_at_once(no_heavy_work, name, words):
    start = time.perf_counter()
    raised(ValueError, lambda: mom.load(name), *words)
    assert time.perf_counter() - start < 2.0


def test_a_preset_typo_fails_fast_and_offline(no_heavy_work, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    raised(ValueError, lambda: mom.load("tiny-lama"), "did you mean")
    assert time.perf_counter() - start < 2.0


def test_a_name_of_the_wrong_type(no_heavy_work):
    raised(TypeError, lambda: mom.load(42), "preset name, a local path or a hub id", "mom presets")


def test_a_hub_id_while_offline_is_one_clear_line(no_heavy_work, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = raised(mom.HubUnreachableError, lambda: mom.load("meta-llama/Llama-3.1-8B"),
                     "offline", "HF_HUB_OFFLINE", "local path or a preset", "'llama-3.1-8b'")
    assert len(message) < 300


def test_an_unreachable_hub_fails_in_one_short_connect(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("a download started"))
    start = time.perf_counter()
    raised(mom.HubUnreachableError, lambda: mom.load("someone/some-model"), "cannot reach", "127.0.0.1",
           "check the network", "local path or a preset")
    assert time.perf_counter() - start < checks.HUB_CONNECT_TIMEOUT_S + 1


def test_a_directory_that_is_no_model(no_heavy_work, tmp_path):
    raised(ValueError, lambda: mom.load(tmp_path), "not a model directory", "no config.json", "save_pretrained")


def test_a_saved_model_loads_from_its_folder_and_other_folders_are_refused(tmp_path):
    saved = tmp_path / "saved"
    original = mom.load("tiny-qwen2")
    original.save_pretrained(saved)
    loaded = mom.load(saved)
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), loaded.state_dict().values()))
    raised(ValueError, lambda: mom.load(saved, num_layers=2), "did you mean 'num_hidden_layers'")
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "gpt2"}')
    raised(ValueError, lambda: mom.load(other), "is a 'gpt2' model", "mom supports llama")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    raised(ValueError, lambda: mom.load(broken), "cannot load the configuration", "use a preset")


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(dtype="int8"), ValueError, ["unknown dtype 'int8'", "bfloat16", "float16"]),
    (dict(dtype=torch.int64), ValueError, ["floating point", "torch.bfloat16"]),
    (dict(num_layers=2), ValueError, ["'num_layers' is not a config field", "did you mean 'num_hidden_layers'"]),
    (dict(hiden_size=64), ValueError, ["did you mean 'hidden_size'"]),
    (dict(num_hidden_layers=0), ValueError, ["num_hidden_layers must be a positive whole number", "at least one"]),
    (dict(num_attention_heads=-4), ValueError, ["num_attention_heads must be a positive", "at least one"]),
    (dict(num_key_value_heads=3), ValueError, ["multiple of num_key_value_heads"]),
    (dict(device="gpu"), ValueError, ["device must be 'cpu', 'cuda'", "'gpu'"]),
    (dict(device=3.5), ValueError, ["device must be"]),
    (dict(seed="1"), ValueError, ["seed must be a whole number"]),
    (dict(attn_implementation="flash"), ValueError, ["attn_implementation must be one of", "'sdpa'"]),
])
def test_careless_load_arguments(no_heavy_work, kwargs, error, words):
    raised(error, lambda: mom.load("tiny-llama", **kwargs), *words)


def test_cuda_without_cuda(no_heavy_work):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    raised(RuntimeError, lambda: mom.load("tiny-llama", device="cuda"), "no CUDA", "device='cpu'", "tiny preset")


@pytest.mark.parametrize("dtype, expected", [
    ("float16", torch.float16), ("fp16", torch.float16), ("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16),
    ("fp32", torch.float32), ("torch.float32", torch.float32), (torch.bfloat16, torch.bfloat16),
])
def test_dtype_names_are_accepted(dtype, expected):
    assert mom.load("tiny-llama", device="meta", dtype=dtype).dtype == expected


def test_a_model_too_large_for_the_device_is_refused_before_building(no_heavy_work, monkeypatch):
    monkeypatch.setattr(checks, "available_bytes", lambda device: 8 * GiB)
    weights = parameter_count(preset_config("llama-3.1-8b")) * 4
    message = raised(mom.ModelTooLargeError, lambda: mom.load("llama-3.1-8b", device="cpu"),
                     "'llama-3.1-8b' in float32", "weights alone", "8.00 GiB", "tiny preset", "device='meta'",
                     "mom.predict\\('llama-3.1-8b'\\)",
                     "bfloat16", "more memory")
    assert mom.format_bytes(weights) in message
    # the same model in bf16 is half the bytes; still too big for 8 GiB, and no "halve it" advice then
    assert "halve" not in raised(mom.ModelTooLargeError, lambda: mom.load("llama-3.1-8b", dtype="bf16"),
                                 "in bfloat16 needs 14.96 GiB")


def test_the_size_estimate_is_the_built_model(monkeypatch):
    """What `load` refuses by is what it would build: the estimate equals the real parameter count."""
    for name in ("llama-3.1-8b", "qwen2.5-7b", "qwen3-8b", "mistral-nemo-12b", *mom.TINY_PRESETS):
        built = mom.load(name, device="meta")
        assert parameter_count(built.config) == sum(p.numel() for p in built.parameters()), name


# -- mom.enable ---------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [dict(mini_sequences=4), "auto"])
def test_enable_with_something_that_is_not_a_config(llama, config):
    raised(TypeError, lambda: mom.enable(llama, config), "must be a mom.MomConfig", "mom.MomConfig\\(")


def test_enable_with_a_preset_name_says_to_load_it_first():
    raised(TypeError, lambda: mom.enable("tiny-llama", mom.MomConfig(mini_sequences=2)), "got the string",
           "mom.load\\('tiny-llama'\\)")


# -- mom.profile and mom.find_max_context ------------------------------------------------------

@pytest.mark.parametrize("config, words", [
    (dict(mini_sequences=4), ["got a dict", "write mom.MomConfig\\(mini_sequences=4\\)"]),
    ("auto", ["got the string 'auto'", "mom.MomConfig\\(offload='auto'\\)"]),
    (16, ["got int", "mom.MomConfig\\(mini_sequences=16\\)"]),
])
def test_profile_with_something_that_is_not_a_config(no_heavy_work, config, words):
    raised(TypeError, lambda: mom.profile("tiny-llama", config), "must be a mom.MomConfig", *words)


@pytest.mark.parametrize("kwargs, words", [
    (dict(context=0), ["context must be a positive whole number, got 0", "prompt length in tokens"]),
    (dict(context=-1), ["context must be a positive whole number, got -1"]),
    (dict(context=2.5), ["got 2.5 \\(float\\)"]),
    (dict(context=True), ["got True"]),
    (dict(new_tokens=0), ["new_tokens must be a positive whole number", "at least one token"]),
    (dict(batch=0), ["batch must be a positive whole number"]),
    (dict(limit_bytes=-5), ["limit_bytes must be a positive number of bytes", "leave it out \\(None\\) for no limit"]),
    (dict(limit_bytes=0), ["limit_bytes must be a positive number", "no limit"]),
    (dict(limit_bytes=math.nan), ["limit_bytes must be a positive number"]),
])
def test_careless_profile_arguments(no_heavy_work, llama, kwargs, words):
    raised(ValueError, lambda: mom.profile(llama, mom.MomConfig(), **kwargs), *words)
    raised(ValueError, lambda: mom.profile("tiny-llama", mom.MomConfig(), **kwargs), *words)  # before loading


def test_a_context_the_machine_cannot_hold(no_heavy_work, llama):
    raised(ValueError, lambda: mom.profile(llama, mom.MomConfig(), context=10**12),
           "context 1000000000000", "needs at least", "prompt and its KV cache", "use a shorter context")


def test_profile_takes_a_model_or_a_preset_name(no_heavy_work):
    raised(TypeError, lambda: mom.profile(3.5), "model must be a loaded causal LM", "preset name")
    raised(mom.UnsupportedModelError, lambda: mom.profile(torch.nn.Linear(2, 2)))


def test_profile_loads_a_preset_name():
    run = mom.profile("tiny-llama", mom.MomConfig(mini_sequences=2), context=64, new_tokens=1, record=False)
    assert not run.oom and run.context == 64 and run.peak_gpu_bytes > 0


def test_a_context_beyond_max_positions_is_said_once():
    short = mom.load("tiny-llama", max_position_embeddings=64)
    with pytest.warns(mom.ContextWarning, match="beyond this model's max_position_embeddings \\(64\\)") as seen:
        run = mom.profile(short, mom.MomConfig(), context=96, new_tokens=1, record=False)
    assert not run.oom and sum(w.category is mom.ContextWarning for w in seen) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", mom.ContextWarning)
        mom.profile(short, mom.MomConfig(), context=128, new_tokens=1, record=False)  # said once per model


@pytest.mark.parametrize("kwargs, words", [
    (dict(low=-100), ["low must be a positive whole number, got -100"]),
    (dict(low=0), ["low must be a positive"]),
    (dict(high=0), ["high must be a positive"]),
    (dict(resolution=2.5), ["resolution must be a positive whole number, got 2.5", "step between contexts"]),
    (dict(resolution=0), ["resolution must be a positive"]),
    (dict(new_tokens=-1), ["new_tokens must be a positive"]),
    (dict(limit_bytes=-1), ["limit_bytes must be a positive", "no limit"]),
    (dict(low=512, high=256, resolution=64), ["above high"]),
])
def test_careless_search_arguments(no_heavy_work, llama, kwargs, words):
    raised(ValueError, lambda: mom.find_max_context(llama, mom.MomConfig(), progress=False, **kwargs), *words)


def test_search_with_something_that_is_not_a_config(no_heavy_work, llama):
    raised(TypeError, lambda: mom.find_max_context(llama, {"offload": "auto"}), "got a dict",
           "mom.MomConfig\\(offload='auto'\\)")


# -- the demo ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    (dict(context=0), ["context must be a positive whole number, got 0"]),
    (dict(context=-1), ["context must be a positive"]),
    (dict(new_tokens=0), ["new_tokens must be a positive"]),
    (dict(limit_bytes=-1), ["limit_bytes must be a positive", "no limit"]),
    (dict(path="/proc/no-such-dir/report.html"), ["does not exist", "create it or choose another path"]),
    (dict(path="/proc/report.html"), ["cannot write in '/proc'", "choose another path"]),
    (dict(model="tiny-lama"), ["did you mean 'tiny-llama'"]),
    (dict(device="gpu"), ["device must be"]),
])
def test_careless_demo_arguments(no_heavy_work, kwargs, words):
    from mom.explore.demo import run_demo

    raised(ValueError, lambda: run_demo(**{"device": "cpu", **kwargs}), *words)


def test_demo_report_path_that_is_a_directory(no_heavy_work, tmp_path):
    from mom.explore.demo import run_demo

    raised(ValueError, lambda: run_demo(device="cpu", path=tmp_path), "is a directory",
           f"e.g. '{tmp_path / 'mom-report.html'}'")


# -- the shared validators the Explorer calls ------------------------------------------------

def test_limits_have_one_meaning():
    assert checks.check_limit(None) is None
    assert checks.check_limit(32 * 2**20) == 32 * 2**20 and checks.check_limit(1.5e6) == 1_500_000
    for bad in (0, -1, -0.5, math.inf, math.nan, True, "1GiB"):
        with pytest.raises(ValueError, match="positive number of bytes.*no limit"):
            checks.check_limit(bad)
    assert checks.limit_from_gib(None) is None and checks.limit_from_gib(0.5) == 2**29
    for bad in (0, -1):
        with pytest.raises(ValueError, match="leave it out for no limit"):
            checks.limit_from_gib(bad)


def test_counts():
    assert checks.check_context(4096) == 4096 and checks.check_context(torch.tensor(8).item()) == 8
    for bad in (0, -5, 2.5, 4096.0, True, None, "4096"):
        with pytest.raises(ValueError, match="positive whole number"):
            checks.check_context(bad)


# -- the CLI ----------------------------------------------------------------------------------

CLI_MISTAKES = [
    (["profile", "--model", "tiny-lama"], ["did you mean 'tiny-llama'"]),
    (["profile", "--model", "nothing-like-it"], ["not a mom preset", "mom presets"]),
    (["demo", "--model", "tiny-qwen"], ["did you mean 'tiny-qwen"]),
    (["profile", "--context", "0"], ["--context", "positive whole number"]),
    (["profile", "--context", "-5"], ["--context", "positive whole number"]),
    (["profile", "--context", "2.5"], ["--context", "positive whole number"]),
    (["demo", "--context", "-1"], ["--context", "positive whole number"]),
    (["demo", "--context", "0"], ["--context", "positive whole number"]),
    (["profile", "--new-tokens", "0"], ["--new-tokens", "positive whole number"]),
    (["profile", "--limit-gib", "-1"], ["--limit-gib", "positive number of GiB", "leave the option out for no limit"]),
    (["profile", "--limit-gib", "0"], ["--limit-gib", "positive number of GiB", "no limit"]),
    (["max-context", "--resolution", "0", "--limit-gib", "1"], ["--resolution", "positive"]),
    (["max-context", "--low", "-100", "--limit-gib", "1"], ["--low", "positive"]),
    (["profile", "--kv-gpu-budget-gib", "-1"], ["--kv-gpu-budget-gib", "0 or more"]),
    (["profile", "-M", "4", "-C", "64"], ["not both"]),
    (["profile", "--device", "gpu"], ["device must be 'cpu', 'cuda'"]),
    (["profile", "--device", "cuda"], ["no CUDA GPU", "device='cpu'"]),
    (["profile", "--json", "/proc/x/out.json"], ["--json", "'/proc/x' does not exist", "choose another path"]),
    (["profile", "--json", "/tmp"], ["--json '/tmp' is a directory", "give a file name"]),
    (["demo", "--out", "/tmp"], ["--out '/tmp' is a directory", "mom-report.html"]),
    (["demo", "--out", "/proc/x/report.html"], ["--out", "does not exist"]),
    (["max-context", "--model", "tiny-llama"], ["on CPU, max-context needs --limit-gib", "without a limit"]),
    (["max-context", "--context", "4096", "--limit-gib", "1"], ["unrecognized arguments: --context 4096"]),
]


@pytest.mark.parametrize("argv, words", CLI_MISTAKES, ids=[" ".join(a) for a, _ in CLI_MISTAKES])
def test_cli_mistakes_are_one_line_before_any_work(no_heavy_work, capsys, argv, words):
    if torch.cuda.is_available() and ("cuda" in argv or (argv[0] == "max-context" and "--device" not in argv)):
        pytest.skip("a rule of machines without CUDA")
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("mom"), err
    for word in words:
        assert _search(word, last), f"{word!r} not in: {last}"


def test_cli_help_covers_every_option():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) >= {"demo", "profile", "max-context", "presets"}
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"mom {name} {action.option_strings} has no help"
    limit = next(a for a in commands["profile"]._actions if "--limit-gib" in a.option_strings)
    assert "positive" in limit.help and "no limit" in limit.help
