"""Timing a generate() run from the inside: TTFT and decode rate, as users run it.

generate() itself is timed, so what is measured is what users run. A logits processor
appended to generate's own timestamps every token; the first call comes right after the
prefill forward, so TTFT is prompt in to first token's logits, and the decode rate is the
(new_tokens - 1) later tokens over the time between the first and the last call. On CUDA the
processor synchronizes (generate syncs every token anyway, to check for finished sequences).
Recording costs host time per hooked call (about 50 us on an H100 host, ~100 calls per token
for 32 layers): invisible in a long prefill (0.4% at 64k on llama-3.1-8b), but decode is
launch-bound, so a recorded run's decode rate is lower (llama-3.2-1b at 16k on an H100: 52
against 75 tokens/s). Pass `record=False` for decode timings.
"""

from __future__ import annotations

import time

import torch

from .peaks import Probe, Watch


class TokenTimer:
    """A LogitsProcessor that timestamps every generated token (and the prefill peak).

    Args:
        probe: synchronized before each timestamp (CUDA), so times are the device's.
        watch: the run's Watch; its peak at the first token is the prefill peak.
    """

    def __init__(self, probe: Probe, watch: Watch):
        self.probe, self.watch = probe, watch
        self.times: list[float] = []
        self.t0 = 0.0
        self.prefill_peak = 0

    def start(self) -> None:
        self.probe.synchronize()
        self.t0 = time.perf_counter()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.probe.synchronize()
        self.times.append(time.perf_counter())
        if len(self.times) == 1:
            self.prefill_peak = self.watch.peak
        return scores

    @property
    def ttft(self) -> float | None:
        return self.times[0] - self.t0 if self.times else None

    def decode_rate(self, new_tokens: int, batch: int) -> float | None:
        if len(self.times) < 2 or new_tokens < 2:
            return None
        return batch * (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)
