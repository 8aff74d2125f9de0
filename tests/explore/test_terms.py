"""docs/design.md's memory formulas match what the tracker measures on a tiny model, term by term."""

from __future__ import annotations

import mom
from mom.explore import terms
from mom.memory.profile import profile


def test_formulas_match_measurements(tiny_llama):
    standard = terms.plain_forward_events(tiny_llama, 512)
    generate = profile(tiny_llama, mom.MomConfig(), 512, new_tokens=2)
    predicted = terms.formulas(tiny_llama, 512)["predicted"]
    measured = terms.measured(standard, generate)
    for term in ("KV cache (all layers)", "MLP intermediates (one layer)", "logits, every position",
                 "logits, last position"):
        assert measured[term] == predicted[term], term
    assert abs(measured["weights"] - predicted["weights"]) < 1024  # rotary tables are not weights
    table = terms.terms_table(tiny_llama, 512, standard, generate)
    assert list(table.columns) == ["formula", "predicted", "measured", "measured / predicted"]
    assert len(terms.layer_table(generate)) == tiny_llama.config.num_hidden_layers
