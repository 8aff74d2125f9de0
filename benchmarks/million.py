"""Issue 14's run: one million tokens of prompt and 32 greedy tokens on one GPU, through generate().

Written for a detached run on the GPU machine (a prefill at 1M takes about 10 minutes, longer
than one command may run): the JSON is rewritten after every phase and, during prefill, after
every decoder layer, so a cut-off run still leaves its figures. Phases, in order:

1. bandwidths: HBM (device copy) and pinned host-to-device, for the streamed-decode bound;
2. the terms of the physical limit: free GPU memory with the weights loaded, weight bytes,
   K/V bytes per token, prefill's transient bytes per token (engine/placement.py), host RAM
   available; the host-RAM guard's answer at each 16,384-token step above the run;
3. the time terms of TTFT: one layer's causal attention kernel at the full length, and the
   token-wise work per token, from a short prefill (where attention is small) less its
   measured attention;
4. the run: mom (mini-sequences of 4096 tokens, trim, offload="auto"), per-layer prefill
   stamps, TTFT, decode per token, peak device memory, K/V bytes on the GPU and the host,
   each layer's tier.

    setsid nohup env MOM_COMMIT=<hash> python benchmarks/million.py --out /tmp/million.json &
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import runfile  # noqa: E402
from generate_clock import StampingStreamer, free_memory, peak_bytes, reset_peak, sync  # noqa: E402

import mom  # noqa: E402
from mom.engine import families, placement  # noqa: E402
from mom.engine.cache import HostMemoryError  # noqa: E402
from mom.memory.provenance import provenance  # noqa: E402

GiB = 2**30
CONFIG = mom.MomConfig(mini_sequence_size=4096, offload="auto")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--context", type=int, default=1_081_344)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--short", type=int, default=65536, help="prefill length for the token-wise term")
    parser.add_argument("--gpu-gib", type=float, default=None,
                        help="cap the allocator at this many GiB (set_per_process_memory_fraction): an "
                             "H100 80GB's 79.1 GiB on a larger card")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run with a tiny preset (no bandwidths)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:  # torch.cuda's per-device queries want an index
        device = torch.device("cuda", torch.cuda.current_device())
    if args.gpu_gib:
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.gpu_gib * GiB / torch.cuda.mem_get_info()[1]))
    report = dict(provenance=provenance(device.type), environment=harness.environment() if device.type == "cuda" else {}, args=vars(args),
                  config=CONFIG.describe(), phase="loading", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    save = lambda: runfile.save(args.out, report)  # noqa: E731
    save()
    model = mom.load(args.model, device=device)
    if device.type == "cuda":
        report["bandwidth"] = dict(hbm=harness.hbm_bandwidth(), host_link=harness.pinned_bandwidth(gib=2.0))
    report["phase"] = "limits"
    save()
    report["limits"] = limit_terms(model, device, args.context)
    save()
    report["phase"] = "time terms"
    report["attention_kernel"] = {str(n): causal_attention_seconds(model, device, n) for n in (args.short, args.context)}
    save()
    report["short_run"] = run(model, device, args.short, 2, report, save, stamp_layers=False)
    save()
    report["phase"] = "run"
    report["run"] = run(model, device, args.context, args.new_tokens, report, save, stamp_layers=True)
    report["phase"] = "done"
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    save()
    return report


# -- the README's table (benchmarks/readme_tables.py) ------------------------------------------

def checks(report: dict) -> dict:
    """Issue 14's figures from a finished run's raw numbers: TTFT against its time terms (every
    layer's causal attention kernel at the full length, plus the token-wise work per token read off
    the short run less its attention), streamed decode against the pinned host-to-device bound,
    and the host-RAM guard's bracket."""
    run, short, layers = report["run"], report["short_run"], len(report["run"]["tiers"])
    kernel = report["attention_kernel"]
    token_wise = (short["ttft_s"] - layers * kernel[str(short["context"])]["seconds"]) / short["context"]
    ttft_terms = layers * kernel[str(run["context"])]["seconds"] + token_wise * run["context"]
    stream_bound = run["streamed_bytes_per_step"] / (report["bandwidth"]["host_link"]["h2d_gb_per_s"] * 1e9)
    guard = report["limits"]["guard"]
    admitted = [g["context"] for g in guard if g["verdict"] == "admitted"]
    refused = [g["context"] for g in guard if g["verdict"] != "admitted"]
    return dict(ttft_terms_s=ttft_terms, ttft_ratio=run["ttft_s"] / ttft_terms, token_wise_s_per_token=token_wise,
                stream_bound_s=stream_bound, stream_ratio=run["decode_median_s_per_token"] / stream_bound,
                guard_admits=max(admitted, default=None), guard_refuses=min(refused, default=None))


def markdown(report: dict, path: str) -> list[str]:
    """The run, its checks and the physical limit of the box (mom.simulate.physical_max_context
    with the run's card memory and host RAM) as README lines."""
    import tables

    from mom.simulate import physical_max_context

    run, figures, prov = report["run"], checks(report), report["provenance"]
    limit = physical_max_context(report["args"]["model"], prov["device_total_bytes"], host_bytes=prov["host_ram_bytes"])
    what = (f"Issue 14: one prompt of {run['context']:,} tokens and {run['new_tokens']} greedy tokens through "
            f"`generate()` (streamer clock), {report['config']}, ")
    rows = [dict(context=f"{run['context']:,}", TTFT=f"{run['ttft_s']:.1f} s",
                 decode=f"{run['decode_median_s_per_token']:.3f} s/token (median)",
                 peak=f"{run['peak'] / GiB:.2f} GiB",
                 kv=f"{run['kv_gpu'] / GiB:.1f} / {run['kv_host'] / GiB:.1f} GiB",
                 layers=f"{run['placed_before_prefill'].count('device')} / {run['tiers'].count('device')}")]
    titles = ["context", "TTFT", "decode", "peak", "kv", "layers"]
    lines = [tables.header({**report, "model": report["args"]["model"]}, path, what), "",
             *tables.markdown(titles, rows), "",
             "(kv: K/V bytes on the GPU / on the host during decode; layers: resident on the GPU before prefill "
             "/ during decode.)", "",
             f"- TTFT {run['ttft_s']:.1f} s = {figures['ttft_ratio']:.3f}x its time terms, {figures['ttft_terms_s']:.1f} s: "
             f"{len(run['tiers'])} layers x the causal attention kernel at the full length "
             f"({report['attention_kernel'][str(run['context'])]['seconds']:.2f} s each) + "
             f"{figures['token_wise_s_per_token'] * 1e6:.1f} us/token of token-wise work (target <= 1.05x).",
             f"- Streamed decode {run['decode_median_s_per_token']:.3f} s/token = {figures['stream_ratio']:.3f}x its bound, "
             f"{run['streamed_bytes_per_step'] / GiB:.1f} GiB per step over "
             f"{report['bandwidth']['host_link']['h2d_gb_per_s']:.1f} GB/s pinned host-to-device measured in the run "
             f"(target <= 1.1x).",
             f"- Host-RAM guard: admits {figures['guard_admits']:,}, refuses {figures['guard_refuses']:,} tokens. "
             f"Physical limit of the box: {limit.formula()}; this run is "
             f"{run['context'] / limit.tokens:.3f} of it (goal: within 10%)."]
    return lines


def limit_terms(model, device: torch.device, context: int, step: int = 16384, steps: int = 24) -> dict:
    """The physical limit's terms, and the host-RAM guard's answer at each step above `context`."""
    from mom.engine.copies import SideStreamCopier

    free = SideStreamCopier(device).free_device_bytes()  # None on a CPU
    total = torch.cuda.mem_get_info(device)[1] if device.type == "cuda" else None
    embedding = families.embedding(model).weight
    # per prompt token, fused; a piece's own term (C=4096 here) is not per prompt token
    transient = placement.prefill_transient_bytes(model.config, model.dtype, 1, 1, piece=0)
    out = dict(gpu_free_after_weights=free, gpu_total=total,
               weights=sum(p.numel() * p.element_size() for p in model.parameters()),
               embedding=embedding.numel() * embedding.element_size(),
               kv_bytes_per_token=families.kv_bytes_per_token(model), prefill_transient_bytes_per_token=transient,
               host_available=psutil.virtual_memory().available, host_total=psutil.virtual_memory().total,
               guard=[])
    with mom.enable(model, CONFIG) as handle:
        for length in range(context, context + steps * step, step):
            try:
                cache, sizes = handle.offload.placed_cache(1, length)
                resident = sum(layer.placement == "device" for layer in cache.mom_layers())
                entry = dict(resident_layers=resident, host_bytes=sum(sum(s) for s in sizes.values()),
                             verdict="admitted")
                del cache
            except HostMemoryError as error:
                entry = dict(verdict=f"refused: {str(error).splitlines()[0]}")
            out["guard"].append(dict(context=length, **entry))
            if entry["verdict"] != "admitted":
                break
    return out


@torch.no_grad()
def causal_attention_seconds(model, device: torch.device, length: int) -> dict:
    """One layer's prefill attention at `length`, the call mom's prefill makes (sdpa, causal, GQA)."""
    _, kv_heads, head_dim = families.kv_geometry(model)
    heads = model.config.num_attention_heads
    q = torch.randn(1, heads, length, head_dim, device=device, dtype=model.dtype)
    k, v = (torch.randn(1, kv_heads, length, head_dim, device=device, dtype=model.dtype) for _ in range(2))
    times = []
    for _ in range(2 if length <= 131072 else 1):
        start = sync(device)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        times.append(sync(device) - start)
        del out
    del q, k, v
    free_memory()
    return dict(seconds=min(times), all=times)


@torch.no_grad()
def run(model, device: torch.device, context: int, new_tokens: int, report: dict, save, stamp_layers: bool) -> dict:
    record = dict(context=context, new_tokens=new_tokens, oom=False, error=None, layer_stamps=[])
    ids = torch.randint(3, model.config.vocab_size, (1, context), device=device,
                        generator=torch.Generator(device).manual_seed(0))
    hooks = []
    if stamp_layers:
        for index, layer in enumerate(families.decoder_layers(model)):
            hooks.append(layer.register_forward_hook(_stamp(record, device, index, report, save)))
    streamer = _UnhookingStreamer(device, hooks)
    handle = mom.enable(model, CONFIG)
    try:
        free_memory()
        reset_peak(device)
        start = time.perf_counter()
        record["start"] = start
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, streamer=streamer,
                             return_dict_in_generate=True)
        stamps = streamer.stamps
        gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
        cache = out.cache if "cache" in out else out.past_key_values
        per_layer = cache.bytes_by_layer()
        record.update(ttft_s=stamps[1] - start, decode_step_s=gaps,
                      decode_s_per_token=sum(gaps) / len(gaps) if gaps else None,
                      decode_median_s_per_token=sorted(gaps)[len(gaps) // 2] if gaps else None,
                      prefill_peak=streamer.prefill_peak,
                      peak=_peak(device, streamer.prefill_peak),
                      kv_gpu=sum(d for d, _ in per_layer), kv_host=sum(h for _, h in per_layer),
                      slot_bytes=cache.slot_bytes, tiers=[layer.tier for layer in cache.mom_layers()],
                      placed_before_prefill=[layer.placement for layer in cache.mom_layers()],
                      streamed_bytes_per_step=sum(h for (d, h), layer in zip(per_layer, cache.mom_layers())
                                                  if layer.tier == "stream"),
                      tokens=out.sequences[0, context:].tolist())
        del out, cache
    except torch.OutOfMemoryError as error:
        record.update(oom=True, wall="gpu", error=str(error).splitlines()[0], peak=_peak(device))
    except HostMemoryError as error:
        record.update(oom=True, wall="host", error=str(error))
    except Exception as error:  # recorded, not raised: the JSON keeps what was measured
        record.update(error=f"{type(error).__name__}: {error}")
    finally:
        for hook in hooks:
            hook.remove()
        handle.restore()
        free_memory()
    return record


def _peak(device: torch.device, prefill_peak: int | None = None) -> int | None:
    """The run's peak device bytes: the larger of prefill's (read at the first token) and decode's."""
    peak = peak_bytes(device)
    return None if peak is None else max(prefill_peak or 0, peak)


def _stamp(record: dict, device: torch.device, index: int, report: dict, save):
    cuda = device.type == "cuda"

    def hook(*_args):
        now = sync(device) - record["start"]
        record["layer_stamps"].append(dict(layer=index, t=now,
                                           allocated=torch.cuda.memory_allocated(device) if cuda else None,
                                           peak=torch.cuda.max_memory_allocated(device) if cuda else None))
        report["run"] = record
        save()

    return hook


class _UnhookingStreamer(StampingStreamer):
    """The streamer clock, removing the per-layer prefill stamps at the first token."""

    def __init__(self, device: torch.device, hooks):
        super().__init__(device)
        self.hooks = hooks

    def put(self, value) -> None:
        super().put(value)
        if len(self.stamps) == 2:
            for hook in self.hooks:
                hook.remove()


if __name__ == "__main__":
    main()
