"""The static decode step of engine/graph_decode.py, run uncaptured on CPU (issue 15).

On a GPU the step is captured and replayed; the arithmetic is the same, so exactness is
checked here, on every family, through `generate()`: per-step logits within 1e-5 of the
unpatched model in fp32 and identical tokens, for greedy and sampled decoding, batch 1 and 2,
across a recapture (more than one window). The cases that must stay on the eager path are
checked to take it and to stay exact.
"""

from __future__ import annotations

import pytest
import torch

import mom
from mom.engine import decode_kernels, families, graph_decode
from mom.engine.patch import handle_of
from tests.conftest import assert_close, prompt

GRAPH = mom.MomConfig(mini_sequences=4, offload="auto", decode_graph=True)


def _generate(model, ids, steps: int, **kwargs):
    return model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, output_logits=True,
                          return_dict_in_generate=True, pad_token_id=0, **kwargs)


@torch.no_grad()
def test_graph_decode_matches_the_unpatched_model_on_every_family(tiny_model):
    ids = prompt(length=40)
    expected = _generate(tiny_model, ids, 12, do_sample=False)
    with mom.enable(tiny_model, GRAPH) as handle:
        actual = _generate(tiny_model, ids, 12, do_sample=False)
        counts, reason = dict(handle.decode.path_counts), handle.decode.last_eager_reason
    assert torch.equal(actual.sequences, expected.sequences)
    for step, (a, e) in enumerate(zip(actual.logits, expected.logits)):
        assert_close(a, e, what=f"logits at decode step {step}")
    if families.sliding_window(tiny_model) is not None:  # transformers' sliding layers: eager
        assert counts == {"eager": 11} and "sliding" in reason
    else:  # the first decode step plans the cache tiers eagerly; every later one is static
        assert counts == {"eager": 1, "graph": 10}, (counts, reason)


@torch.no_grad()
def test_graph_decode_sampling_and_batch_two_match(tiny_models):
    model = tiny_models["tiny-llama"]
    ids = prompt(batch=2, length=33)
    torch.manual_seed(5)
    expected = _generate(model, ids, 10, do_sample=True, top_k=20)
    with mom.enable(model, GRAPH) as handle:
        torch.manual_seed(5)
        actual = _generate(model, ids, 10, do_sample=True, top_k=20)
        assert handle.decode.path_counts["graph"] == 8
    assert torch.equal(actual.sequences, expected.sequences)
    for a, e in zip(actual.logits, expected.logits):
        assert_close(a, e, what="sampled-step logits")


@torch.no_grad()
def test_a_long_decode_recaptures_past_the_window_and_stays_exact(tiny_models, monkeypatch):
    monkeypatch.setattr(graph_decode, "WINDOW", 4)
    model = tiny_models["tiny-qwen2"]
    ids = prompt(length=20)
    expected = _generate(model, ids, 15, do_sample=False)
    with mom.enable(model, GRAPH) as handle:
        actual = _generate(model, ids, 15, do_sample=False)
        assert handle.decode.path_counts["graph"] == 13
    assert torch.equal(actual.sequences, expected.sequences)
    for a, e in zip(actual.logits, expected.logits):
        assert_close(a, e, what="logits across windows")


@torch.no_grad()
def test_a_padded_batch_takes_the_eager_path_and_stays_exact(tiny_models):
    model = tiny_models["tiny-llama"]
    ids = prompt(batch=2, length=24)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    expected = _generate(model, ids, 6, attention_mask=mask, do_sample=False)
    with mom.enable(model, GRAPH) as handle:
        actual = _generate(model, ids, 6, attention_mask=mask, do_sample=False)
        assert handle.decode.path_counts["graph"] == 0
        assert "padded" in handle.decode.last_eager_reason
    assert torch.equal(actual.sequences, expected.sequences)


@torch.no_grad()
def test_module_hooks_send_decode_down_the_eager_path(tiny_models):
    model = tiny_models["tiny-llama"]
    calls = []
    hook = model.model.layers[0].register_forward_hook(lambda *_a: calls.append(1))
    try:
        with mom.enable(model, GRAPH) as handle:
            _generate(model, prompt(length=30), 5, do_sample=False)
            assert handle.decode.path_counts["graph"] == 0
            assert "hooks" in handle.decode.last_eager_reason
    finally:
        hook.remove()
    assert len(calls) == 5  # prefill + 4 decode steps: every step ran the hooked layer


@torch.no_grad()
def test_a_hook_added_or_removed_between_generates_is_seen_at_the_next_step(tiny_models):
    """The hook scan is skipped while no hook can have been registered since one found none
    (DecodeGraphs._hooks_attached): a hook registered after graph steps, and its removal, still
    switch the path at the next step; a global forward hook counts too."""
    model = tiny_models["tiny-llama"]
    ids = prompt(length=30)
    with mom.enable(model, GRAPH) as handle:
        _generate(model, ids, 5, do_sample=False)
        assert handle.decode.path_counts == {"eager": 1, "graph": 3}
        calls = []
        hook = model.model.layers[1].mlp.register_forward_pre_hook(lambda *_a: calls.append(1))
        _generate(model, ids, 5, do_sample=False)
        assert handle.decode.path_counts["graph"] == 3 and len(calls) == 5
        hook.remove()
        _generate(model, ids, 5, do_sample=False)
        assert handle.decode.path_counts["graph"] == 6
        hook = torch.nn.modules.module.register_module_forward_hook(lambda *_a: calls.append(2))
        try:
            _generate(model, ids, 5, do_sample=False)
        finally:
            hook.remove()
        assert handle.decode.path_counts["graph"] == 6 and calls.count(2) > 5


@torch.no_grad()
def test_streamed_layers_keep_the_eager_path(tiny_models):
    model = tiny_models["tiny-llama"]
    ids = prompt(length=30)
    expected = _generate(model, ids, 5, do_sample=False)
    with mom.enable(model, mom.MomConfig(offload="stream", decode_graph=True)) as handle:
        actual = _generate(model, ids, 5, do_sample=False)
        assert handle.decode.path_counts["graph"] == 0
    assert torch.equal(actual.sequences, expected.sequences)


def test_decode_graph_needs_a_mom_cache():
    with pytest.raises(mom.MomConfigError, match="offload"):
        mom.MomConfig(decode_graph=True)
    with pytest.raises(mom.MomConfigError, match="decode_graph"):
        mom.MomConfig(offload="auto", decode_graph="yes")


def test_the_default_is_graph_decode_on_a_gpu_with_a_mom_cache(tiny_models):
    """None: on for a GPU model with a mom cache, so on CPU a default config decodes eagerly
    (the static step uncaptured is for tests only: True forces it); False keeps it off."""
    assert mom.MomConfig(offload="auto").graph_decode_on("cuda")
    assert not mom.MomConfig(offload="auto").graph_decode_on("cpu")
    assert not mom.MomConfig().graph_decode_on("cuda")  # the baseline has no mom cache
    assert not mom.MomConfig(offload="auto", decode_graph=False).graph_decode_on("cuda")
    model = tiny_models["tiny-llama"]
    with mom.enable(model, mom.MomConfig(offload="auto")) as handle:
        assert handle.decode is None
    with mom.enable(model, GRAPH) as handle:
        assert handle.decode is not None
    assert handle_of(model) is None and handle.decode is None


@pytest.mark.parametrize("batch", [1, 3])
def test_varlen_rows_view_the_buffers_where_flash_reads_them(batch):
    """flash-varlen's key rows (row r of batch b at r + b * H_kv * capacity) are the buffer's
    own memory, no copy: the layout the GPU kernel is handed, checked without a GPU."""
    kv_heads, capacity, head_dim = 4, 10, 8
    buffer = torch.randn(batch, kv_heads, capacity, head_dim)
    rows = decode_kernels._as_rows(buffer)
    assert rows.data_ptr() == buffer.data_ptr()
    for b in range(batch):
        start = b * kv_heads * capacity
        assert torch.equal(rows[start : start + capacity].transpose(0, 1), buffer[b])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fused_norm_is_the_modules_function(tiny_models, dtype):
    """Llama's RMSNorm (and its copies) as one rms_norm kernel: fp32 within 1e-6, bf16 within
    one rounding step of the module; a norm with other code is left to its module."""
    model = tiny_models["tiny-llama"]
    norm = model.model.norm
    fused = decode_kernels.fused_norm(norm)
    assert fused is not norm
    x = torch.randn(2, 1, norm.weight.shape[0]) * 3
    with torch.no_grad():
        expected, actual = norm.to(dtype)(x.to(dtype)), fused(x.to(dtype))
    norm.float()
    tolerance = 1e-6 if dtype == torch.float32 else 2 ** -7 * expected.abs().max().item()
    assert actual.dtype == expected.dtype and (actual.float() - expected.float()).abs().max() <= tolerance

    class Other(torch.nn.Module):  # same attributes, other code
        def __init__(self):
            super().__init__()
            self.weight, self.variance_epsilon = norm.weight, 1e-6

        def forward(self, x):
            return x * (1 + self.weight)

    other = Other()
    assert decode_kernels.fused_norm(other) is other


def test_the_step_fuses_norms_and_mlps_through_moms_own_wrappers_only(tiny_models):
    """mom's mini-sequence wrappers (a one-token call runs the class's forward as is) leave the
    norm and the MLP fusable, as they are on an unpatched model; an instance patch of anyone
    else's is not looked through."""
    model = tiny_models["tiny-llama"]
    layer = model.model.layers[0]
    norm, mlp = layer.input_layernorm, layer.mlp
    assert families.plain_rms_norm_eps(norm) is not None and families.plain_silu_mlp(mlp)
    with mom.enable(model, mom.MomConfig(mini_sequences=4, offload="auto")):
        assert "forward" in vars(norm) and "forward" in vars(mlp)  # mom's wrappers are bound
        assert families.plain_rms_norm_eps(norm) == norm.variance_epsilon and families.plain_silu_mlp(mlp)
    norm.forward, mlp.forward = (lambda x: 2 * x), (lambda x: x)
    try:
        assert families.plain_rms_norm_eps(norm) is None and not families.plain_silu_mlp(mlp)
        with mom.enable(model, mom.MomConfig(mini_sequences=4, offload="auto")):  # mom's around someone else's
            assert families.plain_rms_norm_eps(norm) is None and not families.plain_silu_mlp(mlp)
    finally:
        del norm.forward, mlp.forward
    assert not families.plain_silu_mlp(mom.load("tiny-phi3", device="cpu").model.layers[0].mlp)  # fused gate_up


def test_the_step_keeps_torchs_kernels_off_cuda_and_says_why(tiny_models, monkeypatch):
    model = tiny_models["tiny-llama"]
    cpu = torch.device("cpu")
    kernels = decode_kernels.StepKernels(model, families.family_of(model), cpu)
    assert kernels.triton is None and not kernels.fused
    assert kernels.name == "torch (fused kernels are for bf16 on CUDA)"
    monkeypatch.setenv("MOM_DECODE_KERNELS", "torch")
    assert decode_kernels.StepKernels(model, families.family_of(model), cpu).name == "torch (MOM_DECODE_KERNELS=torch)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_step_rotates_q_and_k_together_only_where_it_is_the_familys_rotation(tiny_model, dtype):
    """joint_rotary is taken where it equals the family's apply_rotary_pos_emb bit for bit (every
    tiny family); a rotation of another kind (here: only half the dimensions) keeps its own."""
    model = tiny_model.to(dtype)
    try:
        rotary = decode_kernels.step_rotary(model, families.family_of(model), torch.device("cpu"))
        assert rotary(None) is decode_kernels.joint_rotary
    finally:
        model.float()
    q, k = torch.randn(2, 4, 1, 8), torch.randn(2, 2, 1, 8)
    cos, sin = torch.randn(2, 1, 8), torch.randn(2, 1, 8)

    def partial(q, k, cos, sin):
        rotated = decode_kernels.joint_rotary(q[..., :4], k[..., :4], cos[..., :4], sin[..., :4])
        return torch.cat((rotated[0], q[..., 4:]), -1), torch.cat((rotated[1], k[..., 4:]), -1)

    assert not decode_kernels.same_rotation(partial, q, k, cos, sin)


def test_split_attention_equals_one_softmax_over_all_keys():
    torch.manual_seed(0)
    batch, kv_heads, groups, dim, capacity, prefix, filled = 2, 2, 3, 16, 40, 25, 6
    q = torch.randn(batch, kv_heads * groups, 1, dim, dtype=torch.float64).float()
    keys, values = (torch.randn(batch, kv_heads, capacity, dim) for _ in range(2))
    out = decode_kernels.split_attention(q, keys, values, prefix, torch.arange(8), torch.tensor(filled), 0.25)
    length = prefix + filled
    reference = torch.nn.functional.scaled_dot_product_attention(
        q, keys[:, :, :length], values[:, :, :length], scale=0.25, enable_gqa=True)
    assert_close(out, reference.transpose(1, 2).reshape(batch, 1, -1), what="split attention")


@torch.no_grad()
def test_transformers_output_capturing_hooks_do_not_block_the_graph_path(tiny_models):
    model = tiny_models["tiny-qwen3"]
    model(prompt(length=8), output_hidden_states=True)  # transformers installs its capture hooks for good
    with mom.enable(model, GRAPH) as handle:
        _generate(model, prompt(length=30), 5, do_sample=False)
        assert handle.decode.path_counts["graph"] == 3, handle.decode.last_eager_reason


def test_a_recorded_profile_says_decode_ran_eagerly_for_its_hooks(tiny_models):
    profile = mom.profile(tiny_models["tiny-llama"], GRAPH, context=40, new_tokens=5)
    assert profile.decode_path.startswith("eager (module hooks"), profile.decode_path
    rows = mom.memory.tables.metric_rows(profile)
    assert any(row["metric"] == "decode path" for row in rows)


@torch.no_grad()
def test_a_finished_generate_frees_its_cache_while_the_handle_stays_enabled(tiny_models):
    """The step refers to its K/V buffers weakly: once generate() returns, its cache goes, so
    the next call's placement sees that memory free; the next call recaptures and stays exact."""
    import gc
    import weakref

    model = tiny_models["tiny-llama"]
    ids = prompt(length=40)
    expected = _generate(model, ids, 6, do_sample=False).sequences
    with mom.enable(model, GRAPH) as handle:
        out = _generate(model, ids, 6, do_sample=False)
        first, cache = out.sequences, out.past_key_values
        refs = [weakref.ref(t) for layer in cache.mom_layers() for t in layer.device_kv]
        del out, cache
        gc.collect()
        assert refs and all(ref() is None for ref in refs), "a finished generate()'s K/V is still held"
        second = _generate(model, ids, 6, do_sample=False).sequences
        assert handle.decode.path_counts["graph"] == 8
    assert torch.equal(first, expected) and torch.equal(second, expected)
