"""Plot builders are pure: synthetic events give known bars, lines and tables; real runs agree."""

from __future__ import annotations

import pandas as pd
import pytest

from mom.explore import plots
from mom.memory.events import MiB

from . import synthetic


def by_name(fig):
    return {trace.name: trace for trace in fig.data}


def test_units_are_binary():
    assert plots.pick_unit(3 * (1 << 30)) == ("GiB", 1 << 30)
    assert plots.pick_unit(5 * MiB) == ("MiB", MiB)
    assert plots.pick_unit(10) == ("KiB", 1024)


def test_layer_breakdown_of_synthetic_events():
    table = plots.layer_breakdown(synthetic.events(), synthetic.weights())
    assert list(table.index) == ["embed", "L0", "L1", "L2", "head"]
    assert list(table.loc[["L0", "L1", "L2"], "kv_gpu"]) == [synthetic.KV_PER_LAYER] * 3
    assert list(table.loc[["L0", "L1", "L2"], "activation"]) == [synthetic.ACTIVATION] * 3
    assert table.loc["head", "activation"] == synthetic.LOGITS
    assert table["kv_host"].sum() == 0


def test_kv_written_to_host_shows_as_host():
    table = plots.layer_breakdown(synthetic.events(kv_on_host=True), synthetic.weights())
    assert list(table.loc[["L0", "L1", "L2"], "kv_host"]) == [synthetic.KV_PER_LAYER] * 3
    assert table["kv_gpu"].sum() == 0
    assert table.loc["L0", "activation"] == synthetic.ACTIVATION


def test_layer_figure_stacks_device_terms():
    fig = plots.layer_figure(synthetic.events(), synthetic.weights())
    traces = by_name(fig)
    assert set(traces) == {"Weights", "KV on device", "Activation peak", "KV on host"}
    assert fig.layout.yaxis.title.text == "memory (MiB)"
    weights, kv = traces["Weights"], traces["KV on device"]
    assert kv.base == weights.y  # KV sits on the weights
    assert traces["Activation peak"].base[1] == pytest.approx(weights.y[1] + kv.y[1])
    assert traces["KV on host"].offsetgroup == "host"


def test_empty_layer_figure_has_every_layer():
    fig = plots.layer_figure([], {}, layers=4)
    assert list(fig.data[0].x) == ["embed", "L0", "L1", "L2", "L3", "head"]
    assert set(fig.data[0].y) == {0.0}


def test_timeline_marks_prefill_and_limit():
    events = synthetic.events()
    fig = plots.timeline_figure(events, device_limit_bytes=64 * MiB)
    allocated = by_name(fig)["allocated"]
    assert list(allocated.x) == list(range(len(events)))
    assert allocated.y[0] == pytest.approx(11.0)
    kinds = [shape.type for shape in fig.layout.shapes]
    assert kinds == ["rect", "line"]  # prefill shading, device limit
    assert fig.layout.shapes[1].y0 == pytest.approx(64.0)


def test_sweep_marks_ooms_at_the_limit():
    limit = 40 * MiB
    runs = [synthetic.profile("baseline", 1024, 20 * MiB), synthetic.profile("baseline", 4096, 38 * MiB, oom=True),
            synthetic.profile("M=4", 1024, 15 * MiB), synthetic.profile("M=4", 4096, 30 * MiB),
            synthetic.profile("M=4", 4096, 31 * MiB)]  # a rerun: the later one is drawn
    traces = by_name(plots.sweep_figure(runs, limit))
    assert list(traces["baseline"].x) == [1024]
    assert list(traces["baseline: OOM"].x) == [4096]
    assert traces["baseline: OOM"].y == (40.0,)
    assert traces["M=4"].y == (15.0, 31.0)


def test_summary_table_against_baseline():
    base = synthetic.profile("baseline", 4096, 40 * MiB)
    run = synthetic.profile("M=4", 4096, 30 * MiB)
    table = plots.summary_table(run, base)
    assert list(table.columns) == ["baseline", "M=4", "vs baseline"]
    assert table.loc["peak device", "M=4"] == "30.00 MiB"
    assert table.loc["peak device", "vs baseline"] == "0.75x"
    assert table.loc["host", "vs baseline"] == "-"
    assert "TTFT" not in plots.summary_table(run, base, timings=False).index


def test_summary_table_of_an_oom():
    base = synthetic.profile("baseline", 4096, 38 * MiB, oom=True)
    base.prefill_peak_bytes = 0
    table = plots.summary_table(synthetic.profile("M=4", 4096, 30 * MiB), base)
    assert table.loc["outcome", "baseline"] == "OOM"
    assert table.loc["prefill peak", "baseline"] == "-"
    assert set(table["vs baseline"]) == {"-", ""}


def test_real_runs_show_mom_smaller(real_runs, tiny_llama):
    from mom.explore.live import model_weights_by_layer

    base, run = real_runs
    weights = model_weights_by_layer(tiny_llama)
    assert sum(weights.values()) == base.weights_bytes
    b = plots.layer_breakdown(base, weights)
    m = plots.layer_breakdown(run, weights)
    assert (m.loc["L0":"L1", "activation"] < b.loc["L0":"L1", "activation"]).all()
    assert b["kv_gpu"].sum() > 0 and b["kv_host"].sum() == 0
    assert m["kv_host"].sum() >= b["kv_gpu"].sum()  # stream: prefill K/V landed on the host
    frame = plots.events_frame(run)
    assert isinstance(frame, pd.DataFrame) and list(frame["order"]) == list(range(len(run.events)))
    assert len(plots.timeline_figure(run).data[0].x) == len(run.events)


def test_weights_from_profile_adds_up(real_runs):
    base, _ = real_runs
    weights = plots.weights_from_profile(base)
    assert sum(weights.values()) == base.weights_bytes
    assert plots.layer_figure(base).data[0].y[1] > 0


def test_layer_kv_shows_where_each_layer_ended_up_after_auto_placement():
    """auto with a one-layer budget: L0 back on the device for decoding, L1 and L2 streamed from the host."""
    import mom
    from mom.engine import families
    from mom.engine.cache import growth

    model = mom.load("tiny-llama", device="cpu")
    _, heads, dim = families.kv_geometry(model)
    context = 512
    one_layer = 2 * heads * dim * 4 * (context + growth(context)) + 10
    run = mom.profile(model, mom.MomConfig(mini_sequences=4, offload="auto", kv_gpu_budget=one_layer), context, 3)
    table = plots.layer_breakdown(run)
    assert table.loc["L0", "kv_gpu"] > 0 and table.loc["L0", "kv_host"] == 0
    assert all(table.loc[label, "kv_gpu"] == 0 and table.loc[label, "kv_host"] > 0 for label in ("L1", "L2"))


def test_colours_are_stable_and_red_is_kept_for_failures():
    labels = ["M=4, trim", "M=16, trim, offload=auto", "C=4096, trim, offload=prefill"]
    assert [plots.config_color(x) for x in labels] == [plots.config_color(x) for x in list(labels)]
    assert plots.config_color("baseline") == plots.COLORS["baseline"]
    assert plots.COLORS["limit"] not in plots.CONFIG_PALETTE
    runs = [synthetic.profile("M=4", 1024, 15 * MiB), synthetic.profile("M=4", 2048, 18 * MiB)]
    assert by_name(plots.sweep_figure(runs))["M=4"].line.color == plots.config_color("M=4")


def test_the_kv_budget_is_part_of_the_label():
    run = synthetic.profile("M=4, trim, offload=auto", 1024, MiB)
    run.config["kv_gpu_budget"] = MiB
    assert plots.profile_label(run) == "M=4, trim, offload=auto, KV budget 1.00 MiB"
    fits = synthetic.profile("M=4, trim, offload=auto", 1024, MiB)
    assert plots.profile_label(fits) == "M=4, trim, offload=auto"


def test_the_failed_allocation_is_drawn_where_it_happened():
    from mom.memory.events import MemoryEvent

    events = synthetic.events(decode_steps=0)[:2]  # embedding, L0; then L1's MLP asks for too much
    live = events[-1].bytes_after
    events.append(MemoryEvent("prefill", 0, 1, "mlp", live, live + MiB, live + MiB, kind="oom",
                              requested_bytes=8 * MiB))
    layers = by_name(plots.layer_figure(events, synthetic.weights()))
    failed = layers[plots.FAILED]
    assert list(failed.x) == ["L1"] and failed.y[0] == pytest.approx(9.0)  # 1 MiB held + 8 MiB asked
    timeline = by_name(plots.timeline_figure(events, device_limit_bytes=20 * MiB))
    wall = timeline[plots.FAILED]
    assert wall.y == pytest.approx(((live + MiB) / MiB, (live + 9 * MiB) / MiB))
    assert len(timeline["allocated"].x) == 2  # the failed call is not a finished call


def test_compare_layer_figure_shares_one_scale():
    small = synthetic.events()
    fig = plots.compare_layer_figure({"baseline": synthetic.events(kv_on_host=False), "M=4": small},
                                     synthetic.weights())
    assert [a.text for a in fig.layout.annotations] == ["baseline", "M=4"]
    assert fig.layout.yaxis2.matches == "y"
    assert fig.layout.yaxis.range[1] >= max(max(t.y) + max(t.base or [0]) for t in fig.data)
    assert sum(t.showlegend is not False for t in fig.data) == 4  # one legend entry per term


def test_one_context_many_configurations_are_bars():
    runs = [synthetic.profile("baseline", 4096, 40 * MiB, oom=True), synthetic.profile("M=4", 4096, 20 * MiB),
            synthetic.profile("M=16", 4096, 15 * MiB)]
    fig = plots.sweep_figure(runs, 32 * MiB)
    assert {t.type for t in fig.data} == {"bar"}
    oom = by_name(fig)["baseline: OOM"]
    assert oom.y == (32.0,) and oom.marker.color == plots.COLORS["limit"]


def test_empty_figures_say_so_and_start_at_zero():
    fig = plots.timeline_figure([], device_limit_bytes=32 * MiB)
    assert plots.EMPTY_NOTE in [a.text for a in fig.layout.annotations]
    assert fig.layout.yaxis.range[0] == 0
    assert plots.EMPTY_NOTE in [a.text for a in plots.layer_figure([], {}, layers=2).layout.annotations]


def test_sweep_ticks_do_not_crowd():
    runs = [synthetic.profile("M=4", c, MiB) for c in (4096, 8000, 8192, 16384)]
    fig = plots.sweep_figure(runs)
    assert list(fig.layout.xaxis.tickvals) == [4096, 8000, 16384]
    assert fig.layout.showlegend is True
