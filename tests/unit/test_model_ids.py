"""validate_model_id: canonical ids pass, every other spelling is refused, and asking again (its
verdicts are cached per id) gives the same answer."""

from __future__ import annotations

import pytest

from server.errors import BadRequest, ModelNotFound
from server.repository.records import MAX_MODEL_ID_CHARS, validate_model_id


@pytest.mark.parametrize("model_id", ["m", "org/model", "sentence-transformers/all-MiniLM-L6-v2", "a.b/c-d_e"])
def test_canonical_ids_pass(model_id: str) -> None:
    for _ in range(2):
        assert validate_model_id(model_id) == model_id


@pytest.mark.parametrize("model_id", ["", "/abs", "x/", "a//b", "./x", "a/./b", "../x", "a/../b", ".hidden",
                                      "a\\b", "a\x00b", "é" * 128])  # the last: a folder name of 256 bytes
def test_other_spellings_are_refused(model_id: str) -> None:
    for _ in range(2):
        with pytest.raises(ModelNotFound):
            validate_model_id(model_id)


def test_an_id_too_long_to_be_one_is_refused_before_anything_else() -> None:
    with pytest.raises(BadRequest, match="characters long"):
        validate_model_id("x" * (MAX_MODEL_ID_CHARS + 1))
