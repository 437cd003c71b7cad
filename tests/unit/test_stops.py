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
