"""Exactness checks that can fail: the yardsticks behind "mom computes the same function".

fp32: greedy tokens identical to the unpatched model and logits within 1e-5 relative.

bf16: token equality against one bf16 run is the wrong yardstick, because Hugging Face's own
bf16 `generate()` is not reproducible run to run on a GPU (llama-3.2-1b at 32k: two runs of
the same unpatched model diverged at token 11). Instead, every model sees the same token
sequence (teacher forcing: the fp32 reference's greedy continuation), and at every step the
largest logit error of mom (bf16) against an fp32 copy of the same weights must be at most
`factor` (1.5) times the unpatched bf16 model's error against that copy, plus a floor of one
bf16 unit in the last place at the size of the largest reference logit (2^-8 x max|logit|):
bf16 logits are themselves rounded to that step, so two bf16 computations can always differ
by it. The check grows harder, not easier, as mom's error grows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from .engine import families

BF16_FACTOR = 1.5
BF16_ULP = 2.0**-8


@torch.no_grad()
def teacher_forced_logits(model, ids: torch.Tensor, continuation: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """Last-position logits after the prompt and after each continuation token, [T+1, B, V] in fp32.

    The prompt goes through one forward call with `logits_to_keep=1` (as `generate()` sends it,
    so mom's trim and offload paths run), then each token of `continuation` ([B, T]) is fed
    through the cache the prompt call returned.
    """
    out = model(ids, attention_mask=attention_mask, use_cache=True, logits_to_keep=1)
    steps = [out.logits[:, -1].float()]
    cache = out.cache if "cache" in out else out.past_key_values
    name = families.cache_in_call(model, {})[0]  # `cache` or `past_key_values`, by release
    mask = attention_mask
    for position in range(continuation.shape[1]):
        token = continuation[:, position : position + 1]
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        out = model(token, attention_mask=mask, use_cache=True, **{name: cache})
        cache = out.cache if "cache" in out else out.past_key_values
        steps.append(out.logits[:, -1].float())
    return torch.stack(steps)


@dataclass
class Bf16Verdict:
    """Per-step largest logit errors against the fp32 reference, and the verdict."""

    mom_error: list[float]
    baseline_error: list[float]
    floor: float
    factor: float = BF16_FACTOR
    failing_steps: list[int] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failing_steps

    @property
    def worst_ratio(self) -> float:
        return max(m / max(b, 1e-30) for m, b in zip(self.mom_error, self.baseline_error))

    def summary(self) -> str:
        return (f"mom max error {max(self.mom_error):.4g}, baseline max error {max(self.baseline_error):.4g}, "
                f"worst per-step ratio {self.worst_ratio:.3f} (allowed {self.factor} + floor {self.floor:.3g}); "
                f"failing steps: {self.failing_steps or 'none'}")


def bf16_verdict(reference: torch.Tensor, baseline: torch.Tensor, mom: torch.Tensor,
                 factor: float = BF16_FACTOR) -> Bf16Verdict:
    """Compare teacher-forced logits [T, B, V]: mom's error may be at most factor x the baseline's."""
    floor = BF16_ULP * reference.abs().max().item()
    mom_error = _per_step_error(mom, reference)
    baseline_error = _per_step_error(baseline, reference)
    failing = [step for step, (m, b) in enumerate(zip(mom_error, baseline_error)) if m > factor * b + floor]
    return Bf16Verdict(mom_error, baseline_error, floor, factor, failing)


def _per_step_error(actual: torch.Tensor, reference: torch.Tensor) -> list[float]:
    return [(a.float() - r.float()).abs().max().item() for a, r in zip(actual, reference)]


def fp32_mismatch(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> str | None:
    """None when logits [T, B, V] agree within rtol of the largest logit and the argmax tokens
    are identical at every step; else a message naming the first step that differs."""
    scale = expected.abs().max().clamp_min(1e-12)
    for step, (a, e) in enumerate(zip(actual, expected)):
        error = ((a - e).abs().max() / scale).item()
        if error > rtol:
            return f"step {step}: relative logit error {error:.3g} > {rtol:g}"
        if not torch.equal(a.argmax(-1), e.argmax(-1)):
            return f"step {step}: greedy tokens differ"
    return None


def greedy_continuation(model, ids: torch.Tensor, steps: int, attention_mask=None) -> torch.Tensor:
    """The model's own greedy continuation of `ids`, [B, steps] (EOS ignored)."""
    out = model.generate(ids, attention_mask=attention_mask, max_new_tokens=steps, min_new_tokens=steps,
                         do_sample=False, pad_token_id=0)
    return out[:, ids.shape[1] :]


def configs_under_test() -> Iterable:
    """The mom configurations every exactness check covers: each offload mode, with and
    without mini-sequences (trim on)."""
    from .config import MomConfig

    for offload in ("none", "prefill", "stream", "auto"):
        yield MomConfig(mini_sequences=4, offload=offload)
    yield MomConfig(offload="stream", trim_last_layer=False)
