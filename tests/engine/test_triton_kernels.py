"""The graph step's fused Triton kernels (engine/triton_kernels.py), run on CPU by Triton's
interpreter (TRITON_INTERPRET=1), which must be set before Triton is imported: each check runs
in a fresh interpreter process.

The kernels round to bf16 by integer arithmetic, so the interpreter gives the GPU's bits and the
checks below are exact where the kernels claim exactness: RoPE, the K/V write, the residual sum,
and here also the norm and the SiLU product (numpy's reductions and exp happen to agree with
torch's on these inputs; the GPU test allows those two one bf16 step on a rare element).
Skipped where Triton is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _interpret(script: str) -> dict:
    """Run `script` under Triton's interpreter; it prints one JSON object last."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_rope_write_rotates_as_llama_and_writes_k_and_v_at_the_slot_only():
    result = _interpret("""
        import json, torch
        from mom.engine import triton_kernels as tk
        from mom.engine.decode_kernels import joint_rotary
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
        torch.manual_seed(0)
        bf = torch.bfloat16
        out = {}
        for batch, heads, kv_heads, hd, slot in ((1, 8, 2, 128, 0), (2, 4, 4, 64, 6)):
            q = torch.randn(batch, 1, heads * hd, dtype=bf).view(batch, 1, heads, hd).transpose(1, 2)
            k = torch.randn(batch, 1, kv_heads * hd, dtype=bf).view(batch, 1, kv_heads, hd).transpose(1, 2)
            v = torch.randn(batch, 1, kv_heads * hd, dtype=bf).view(batch, 1, kv_heads, hd).transpose(1, 2)
            angles = 1000 * torch.rand(batch, 1, hd)
            cos, sin = angles.cos().to(bf), angles.sin().to(bf)
            keys = torch.full((batch, kv_heads, 8, hd), 7.0, dtype=bf)
            values = keys.clone()
            rotated = tk.rope_write(q, k, v, cos, sin, keys, values, torch.tensor([slot]))
            want_q, want_k = apply_rotary_pos_emb(q, k, cos, sin)
            others = [i for i in range(8) if i != slot]
            out[f"{batch}x{heads}x{hd}"] = dict(
                q=torch.equal(rotated, want_q), k=torch.equal(keys[:, :, slot:slot + 1], want_k),
                v=torch.equal(values[:, :, slot:slot + 1], v), joint=torch.equal(rotated, joint_rotary(q, k, cos, sin)[0]),
                untouched=bool((keys[:, :, others] == 7).all() and (values[:, :, others] == 7).all()),
                contiguous=rotated.is_contiguous() and tuple(rotated.shape) == (batch, heads, 1, hd))
        print(json.dumps(out))
    """)
    for case, checks in result.items():
        assert all(checks.values()), (case, checks)


def test_add_rms_norm_and_silu_mul_give_llamas_bits():
    result = _interpret("""
        import json, torch
        from transformers.models.llama.modeling_llama import LlamaRMSNorm
        from transformers.activations import ACT2FN
        from mom.engine import triton_kernels as tk
        torch.manual_seed(0)
        bf = torch.bfloat16
        out = {}
        for width in (4096, 3584, 96):  # a power of two, Qwen 7B's width, a tiny model's
            norm = LlamaRMSNorm(width, eps=1e-5).to(bf)
            norm.weight.data = torch.randn(width).to(bf)
            x, delta = torch.randn(3, 1, width, dtype=bf) * 4, torch.randn(3, 1, width, dtype=bf)
            summed, normed = tk.add_rms_norm(x, delta, norm.weight, 1e-5)
            alone_x, alone = tk.add_rms_norm(x, None, norm.weight, 1e-5)
            gate, up = torch.randn(2, 1, width, dtype=bf) * 4, torch.randn(2, 1, width, dtype=bf)
            out[width] = dict(sum=torch.equal(summed, x + delta), norm=torch.equal(normed, norm(x + delta)),
                              alone=alone_x is x and torch.equal(alone, norm(x)),
                              silu=torch.equal(tk.silu_mul(gate, up), ACT2FN["silu"](gate) * up))
        print(json.dumps(out))
    """)
    for width, checks in result.items():
        assert all(checks.values()), (width, checks)


def test_the_static_step_with_the_fused_kernels_decodes_as_with_torchs():
    """The whole step wired with the Triton kernels (forced on CPU, where the engine would keep
    torch's) on every tiny family in bf16: the same tokens as the torch step and the unpatched
    model; logits within bf16 noise of the torch step; the kernels' own check passed where the
    family is Llama-shaped."""
    result = _interpret("""
        import json, torch
        import mom, mom.engine.families
        from mom.engine import decode_kernels, triton_kernels
        init = decode_kernels.StepKernels.__init__
        def forced(self, model, family, device):
            init(self, model, family, device)
            self.why_all = None
            self.why_torch = decode_kernels._triton_checks(triton_kernels, model, family, self.rotary)
            self.fused = frozenset(p for p in self.PIECES if p not in self.why_torch)
            self.triton = triton_kernels
        calls = {}
        def counted(name, kernel):
            def call(*args):
                calls[name] = calls.get(name, 0) + 1
                return kernel(*args)
            return call
        for name in ("add_rms_norm", "rope_write", "silu_mul"):
            setattr(triton_kernels, name, counted(name, getattr(triton_kernels, name)))
        config = mom.MomConfig(mini_sequences=4, offload="auto", decode_graph=True)
        ids = torch.randint(3, 500, (2, 37), generator=torch.Generator().manual_seed(1))
        def run(model):
            with torch.no_grad():
                return model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0,
                                      output_logits=True, return_dict_in_generate=True)
        out = {}
        for name in mom.TINY_PRESETS:
            model = mom.load(name, device="cpu", dtype=torch.bfloat16)
            plain = run(model)
            with mom.enable(model, config):
                with_torch = run(model)
            decode_kernels.StepKernels.__init__ = forced
            calls.clear()
            try:
                with mom.enable(model, config) as handle:
                    fused = run(model)
                    stats = handle.decode.stats()
            finally:
                decode_kernels.StepKernels.__init__ = init
            worst = max(((f.float() - t.float()).abs().max() / t.float().abs().max()).item()
                        for f, t in zip(fused.logits, with_torch.logits))
            out[name] = dict(kernels=stats["kernels"], graph_steps=stats["graph_steps"], worst=worst,
                             sliding=mom.engine.families.sliding_window(model) is not None, calls=dict(calls),
                             same_tokens=torch.equal(fused.sequences, with_torch.sequences),
                             as_plain=torch.equal(fused.sequences, plain.sequences))
        print(json.dumps(out))
    """)
    print(result)
    for name, r in result.items():
        assert r["graph_steps"] >= 6 or r["sliding"], (name, r)  # transformers' sliding layers stay eager
        assert r["same_tokens"] and r["as_plain"], (name, r)
        assert r["worst"] <= 1e-2, (name, r)
    llama = result["tiny-llama"]
    layers = 2 * 6  # two layers (tiny presets) x six static steps; plus the check's own calls
    assert llama["kernels"] == "triton", llama
    assert llama["calls"]["rope_write"] >= layers and llama["calls"]["silu_mul"] >= layers, llama
    assert llama["calls"]["add_rms_norm"] >= 2 * layers + 6, llama  # two per layer, and the final norm
