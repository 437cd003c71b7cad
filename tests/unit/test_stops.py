from server.pipelines.stops import StopStringFilter


def run(stops: list[str], pieces: list[str], include: bool = False) -> tuple[str, bool]:
    f = StopStringFilter(stops, include_stop=include)
    out = "".join(f.feed(p) for p in pieces)
    return out + f.flush(), f.stopped


def test_no_stops_passes_through() -> None:
    assert run([], ["ab", "c"]) == ("abc", False)


def test_stop_split_across_pieces_never_leaks() -> None:
    f = StopStringFilter(["END"])
    assert f.feed("hello E") == "hello "
    assert f.feed("N") == ""
    assert f.feed("D and more") == ""
    assert f.stopped
    assert f.flush() == ""


def test_include_stop_string() -> None:
    assert run(["\n\n"], ["a\n", "\nb"], include=True) == ("a\n\n", True)


def test_false_alarm_is_released() -> None:
    assert run(["END"], ["x E", "Nd y"]) == ("x ENd y", False)
    assert run(["END"], ["x EN"]) == ("x EN", False)  # flushed at the end


def test_earliest_of_several_stops_wins() -> None:
    assert run(["b", "abc"], ["xxabc"]) == ("xx", True)


def _brute_longest_prefix_suffix(stops: list[str], buffer: str) -> int:
    return max((n for s in stops for n in range(1, len(s)) if buffer.endswith(s[:n])), default=0)


def test_held_suffix_matches_a_brute_force_search() -> None:
    import random

    rng = random.Random(7)
    for _ in range(2000):
        stops = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(1, 3))]
        buffer = "".join(rng.choice("ab") for _ in range(rng.randint(0, 12)))
        if any(s in buffer for s in stops):
            continue  # feed() never asks then
        f = StopStringFilter(stops)
        assert f._longest_stop_prefix_suffix(buffer) == _brute_longest_prefix_suffix(stops, buffer), (stops, buffer)


def test_held_suffix_search_is_linear_in_the_stop_length() -> None:
    import time

    # Every prefix longer than half the stop matches the buffer at both ends and fails in the middle: trying
    # each prefix length costs ~n^2/4 character compares (about 6 s here), a KMP scan about n steps (0.1 s).
    n = 600_000
    stop = "a" * (n // 2) + "b" + "a" * (n // 2)
    f = StopStringFilter([stop])
    started = time.perf_counter()
    assert f._longest_stop_prefix_suffix("a" * n) == n // 2
    assert time.perf_counter() - started < 1.5
