"""IncrementalDetokenizer and decode_steps on a fake byte-level vocabulary (no OpenVINO)."""

from __future__ import annotations

from server.pipelines.detokenize import IncrementalDetokenizer, decode_steps

VOCAB = {1: b"Hello", 2: b" world", 3: b"\xc3", 4: b"\xa9", 5: b"!", 6: b"\xe2\x82", 7: b"\xac"}


def decode(ids: list[int]) -> str:
    """Like a byte-level BPE decoder: bytes joined, an incomplete UTF-8 tail becomes U+FFFD; a
    leading space is dropped, as SentencePiece decoders do at the start of a sequence."""
    text = b"".join(VOCAB[i] for i in ids).decode("utf-8", errors="replace")
    return text[1:] if text.startswith(" ") else text


def decode_batch(batch: list[list[int]]) -> list[str]:
    decode_batch.calls += 1
    return [decode(ids) for ids in batch]


decode_batch.calls = 0


def step(detokenizer: IncrementalDetokenizer, ids: list[int], *, final: bool = False) -> str:
    detokenizer.extend(ids)
    return decode_steps(decode_batch, [(detokenizer, final)])[0]


def stream(chunks: list[list[int]]) -> list[str]:
    """The text of each step, then of a final step with no new tokens."""
    detokenizer = IncrementalDetokenizer()
    return [step(detokenizer, chunk) for chunk in chunks] + [step(detokenizer, [], final=True)]


def test_each_token_text_is_emitted_at_once() -> None:
    assert stream([[1], [2], [5]]) == ["Hello", " world", "!", ""]


def test_spaces_inside_the_text_survive_the_window() -> None:
    # " world" decoded alone would lose its space; decoded after "Hello" it keeps it.
    assert "".join(stream([[1], [2], [2], [2]])) == "Hello world world world"


def test_split_utf8_is_held_until_complete() -> None:
    assert stream([[1], [3], [4], [5]]) == ["Hello", "", "é", "!", ""]
    assert stream([[6], [7]]) == ["", "€", ""]


def test_several_tokens_at_once() -> None:
    # An incomplete tail holds back the whole update until it completes (one step, as tokens come one per step).
    assert stream([[1, 2, 3], [4, 5]]) == ["", "Hello worldé!", ""]


def test_the_final_step_emits_an_incomplete_tail() -> None:
    detokenizer = IncrementalDetokenizer()
    assert step(detokenizer, [1, 3]) == ""
    assert step(detokenizer, [], final=True) == "Hello\ufffd"


def test_one_decode_call_for_all_requests_of_a_step() -> None:
    first, second, idle = IncrementalDetokenizer(), IncrementalDetokenizer(), IncrementalDetokenizer()
    first.extend([1])
    second.extend([6])
    before = decode_batch.calls
    assert decode_steps(decode_batch, [(first, False), (second, False), (idle, False)]) == ["Hello", "", ""]
    first.extend([2])
    second.extend([7])
    assert decode_steps(decode_batch, [(first, False), (second, True), (idle, True)]) == [" world", "€", ""]
    assert decode_batch.calls - before == 2
