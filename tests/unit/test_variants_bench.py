"""tools/bench/variants.py: the report's tokens per engine step (how many proposed tokens the engine
accepted) and the variants' own checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.unit.bench_modules import bench_module


@pytest.fixture(scope="module")
def variants():
    yield from bench_module("variants.py")


def test_tokens_per_step_shows_how_many_proposed_tokens_the_engine_accepted(variants) -> None:
    def run(tokens: int, steps: int | None, concurrency: int = 1) -> object:  # a generation.Run
        notes = {} if steps is None else {"cycle_steps": steps}
        return variants.Run("raw", concurrency, 1.0, [SimpleNamespace(completion_tokens=tokens)], notes)

    assert variants.tokens_per_step([run(128, 128), run(128, 64), run(128, 40)]) == "2.00"  # the median run
    # a mode that does not time its steps (the stateful pipeline) gives a dash, not a made-up figure
    assert variants.tokens_per_step([run(128, None)]) == "-"
    assert variants.tokens_per_step([run(1024, 128, concurrency=8)]) == "1.00"  # per stream: 8 streams a step


def test_a_draft_variant_without_the_raw_engine_or_a_proposal_count_is_refused(variants) -> None:
    with pytest.raises(ValueError, match="raw engine"):
        variants.Variant("x", "x", draft="smollm2-int8", assistant_tokens=3, engine="naive")
    with pytest.raises(ValueError, match="assistant_tokens"):
        variants.Variant("x", "x", draft="smollm2-int8")
