"""enable/restore guarantees: instance-only, exact restore, refusals, clear errors."""

from __future__ import annotations

import pytest
import torch

import mom
from mom.engine import families
from tests.conftest import prompt


def _instance_forwards(model):
    return {name: module.__dict__.get("forward") for name, module in model.named_modules()}


def test_restore_really_restores(tiny_models):
    model = tiny_models["tiny-llama"]
    before = _instance_forwards(model)
    ids = prompt(length=20)
    with torch.no_grad():
        expected = model(ids).logits
    handle = mom.enable(model, mom.MomConfig(mini_sequences=3))
    assert _instance_forwards(model) != before
    handle.restore()
    handle.restore()  # idempotent
    assert _instance_forwards(model) == before
    assert mom.engine.patch.handle_of(model) is None
    with torch.no_grad():
        assert torch.equal(model(ids).logits, expected)


def test_class_never_patched(tiny_models):
    cls = type(tiny_models["tiny-llama"])
    forward = cls.forward
    mlp_cls = type(families.decoder_layers(tiny_models["tiny-llama"])[0].mlp)
    mlp_forward = mlp_cls.forward
    with mom.enable(tiny_models["tiny-llama"], mom.MomConfig(mini_sequences=3)):
        assert cls.forward is forward and mlp_cls.forward is mlp_forward


def test_double_enable_refused(tiny_models):
    model = tiny_models["tiny-qwen2"]
    with mom.enable(model, mom.MomConfig(mini_sequences=2)):
        with pytest.raises(mom.AlreadyEnabledError, match="restore"):
            mom.enable(model, mom.MomConfig(mini_sequences=4))
    mom.enable(model, mom.MomConfig()).restore()  # fine again after restore


def test_exception_in_body_restores(tiny_models):
    model = tiny_models["tiny-qwen3"]
    before = _instance_forwards(model)
    with pytest.raises(RuntimeError, match="boom"):
        with mom.enable(model, mom.MomConfig(mini_sequences=2)):
            raise RuntimeError("boom")
    assert _instance_forwards(model) == before


def test_other_model_of_same_class_untouched():
    a = mom.load("tiny-llama", device="cpu", seed=1)
    b = mom.load("tiny-llama", device="cpu", seed=1)
    seen = []
    mlp = families.decoder_layers(b)[0].mlp
    hook = mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[-2]))
    with torch.no_grad(), mom.enable(a, mom.MomConfig(mini_sequences=4)):
        b(prompt(length=16), logits_to_keep=1)
        assert "forward" not in b.__dict__ and "forward" not in mlp.__dict__
    hook.remove()
    assert seen == [16]


def test_existing_instance_patch_is_put_back(tiny_models):
    model = tiny_models["tiny-mistral"]
    mlp = families.decoder_layers(model)[0].mlp
    theirs = mlp.forward  # a bound method someone else put in the instance dict
    mlp.__dict__["forward"] = theirs
    try:
        with mom.enable(model, mom.MomConfig(mini_sequences=2)):
            assert mlp.__dict__["forward"] is not theirs
        assert mlp.__dict__["forward"] is theirs
    finally:
        del mlp.__dict__["forward"]


def test_generate_still_gets_logits_to_keep(tiny_models):
    model = tiny_models["tiny-llama"]
    with mom.enable(model, mom.MomConfig(mini_sequences=2)):
        assert model._supports_logits_to_keep()


def test_unsupported_model_type_names_the_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(mom.UnsupportedModelError, match="llama, mistral, phi3, qwen2, qwen3"):
        mom.enable(model, mom.MomConfig(mini_sequences=2))


def test_not_a_causal_lm(tiny_models):
    with pytest.raises(mom.UnsupportedModelError, match="causal LM"):
        mom.enable(tiny_models["tiny-llama"].model, mom.MomConfig(mini_sequences=2))
    with pytest.raises(mom.UnsupportedModelError, match="causal LM"):
        mom.enable(torch.nn.Linear(2, 2), mom.MomConfig(mini_sequences=2))


def test_baseline_config_patches_no_modules_but_the_entry(tiny_models):
    model = tiny_models["tiny-phi3"]
    with mom.enable(model, mom.MomConfig()):
        patched = [n for n, m in model.named_modules() if "forward" in m.__dict__]
    assert patched == [""]


@torch.no_grad()
def test_two_models_patched_at_once_stay_independent(tiny_models):
    llama, qwen = tiny_models["tiny-llama"], tiny_models["tiny-qwen2"]
    ids = prompt(length=40, seed=8)
    expected = {name: m.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0) for name, m in
                (("llama", llama), ("qwen", qwen))}
    with mom.enable(llama, mom.MomConfig(mini_sequences=3, offload="stream")), \
            mom.enable(qwen, mom.MomConfig(mini_sequences=2, offload="auto")):
        for _ in range(2):
            for name, m in (("llama", llama), ("qwen", qwen)):
                assert torch.equal(m.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0), expected[name])


@torch.no_grad()
@pytest.mark.parametrize("offload", ["none", "stream"])
def test_a_keyboard_interrupt_from_a_hook_mid_generate_leaves_the_model_exact(tiny_models, offload):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=40, seed=9)
    expected = model(ids).logits
    calls = {"n": 0}

    def interrupt(*_args):
        calls["n"] += 1
        if calls["n"] == 7:  # a decode step, mid-generate
            raise KeyboardInterrupt

    hook = model.model.layers[1].register_forward_hook(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), mom.enable(model, mom.MomConfig(mini_sequences=3, offload=offload)):
            model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
    finally:
        hook.remove()
    assert mom.engine.patch.handle_of(model) is None
    assert torch.equal(model(ids).logits, expected)
