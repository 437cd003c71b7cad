"""A generation request with more sequences than the engine ever holds is a 400 naming what to cut:
`n` when it asks for several choices, `prompt` when the prompts alone are too many."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server.errors import BadRequest
from server.services.generation import _admit
from server.services.generation_plan import GenerationPlan


class SmallEngine:
    capacity = 2

    def __init__(self) -> None:
        self.admitted: list[int] = []

    def admit(self, sequences: int = 1) -> SimpleNamespace:
        self.admitted.append(sequences)
        return SimpleNamespace(release=lambda: None)


def plan(prompts: int, n: int) -> GenerationPlan:
    return GenerationPlan(kind="completion", model_id="m", prompts=[("hi", [1])] * prompts, configs=[{}] * (prompts * n))


@pytest.mark.parametrize("prompts, n, param", [(1, 3, "n"), (3, 1, "prompt"), (2, 2, "n")])
def test_more_sequences_than_the_engine_holds_is_a_400(prompts: int, n: int, param: str) -> None:
    engine = SmallEngine()
    with pytest.raises(BadRequest) as refused:
        _admit(SimpleNamespace(engine=engine), plan(prompts, n))
    assert refused.value.param == param and str(prompts * n) in refused.value.message
    assert engine.admitted == []  # refused before reserving anything


def test_a_request_that_fits_is_admitted() -> None:
    engine = SmallEngine()
    _admit(SimpleNamespace(engine=engine), plan(2, 1))
    assert engine.admitted == [2]
