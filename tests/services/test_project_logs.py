"""The merge of containers' log streams (opencs.services.projects.logs) over fake engine streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from opencs.engines.apps import AppEngineError, ContainerRef
from opencs.services.projects import logs
from opencs.services.projects.logs import LogOptions


class Stream:
    def __init__(self, lines: list[bytes]) -> None:
        self.lines, self.closed = lines, False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.lines

    def close(self) -> None:
        self.closed = True


class Engine:
    def __init__(self, streams: dict[str, Stream]) -> None:
        self.streams = streams
        self.asked: list[tuple[str, bool, int | None]] = []

    def open_logs(self, target: ContainerRef, *, follow: bool, tail: int | None, since: float | None) -> Stream:
        self.asked.append((target.container_id, follow, tail))
        if target.container_id == "gone":
            raise AppEngineError("gone", "ContainerNotFound")
        if target.container_id == "down":
            raise AppEngineError("refused", "EngineUnreachable")
        return self.streams[target.container_id]


def ref(cid: str) -> ContainerRef:
    return ContainerRef(None, cid)  # type: ignore[arg-type]


def test_lines_of_all_containers_in_time_order_with_prefix() -> None:
    a = Stream([b"2026-12-03T08:00:01.5Z one\n", b"2026-12-03T08:00:03Z three\n"])
    b = Stream([b"2026-12-03T08:00:02.25Z two\n"])
    eng: Any = Engine({"a": a, "b": b})
    found = [("web_app.1.x", ref("a")), ("web_app.2.yy", ref("b")), ("web_app.3", ref("gone"))]
    streams = logs.open_all(eng, found, LogOptions(tail=5))
    assert [x[1:] for x in eng.asked] == [(False, 5)] * 3
    out = list(logs.lines(streams, LogOptions()))
    assert out == ["web_app.1.x  | one\n", "web_app.2.yy | two\n", "web_app.1.x  | three\n"]
    assert a.closed and b.closed
    streams = logs.open_all(eng, found[:1], LogOptions())
    assert list(logs.lines(streams, LogOptions(timestamps=True))) == [
        "web_app.1.x | 2026-12-03T08:00:01.5Z one\n", "web_app.1.x | 2026-12-03T08:00:03Z three\n"]


def test_follow_ends_when_every_stream_ends() -> None:
    eng: Any = Engine({"a": Stream([b"t x\n"]), "b": Stream([b"t y\n"])})
    streams = logs.open_all(eng, [("a", ref("a")), ("b", ref("b"))], LogOptions(follow=True))
    out = list(logs.lines(streams, LogOptions(follow=True)))
    assert out[0] == "" and sorted(out[1:]) == ["a | x\n", "b | y\n"]  # "": the head goes out at once


def test_an_unreachable_engine_closes_what_was_opened() -> None:
    a = Stream([])
    eng: Any = Engine({"a": a})
    with pytest.raises(AppEngineError):
        logs.open_all(eng, [("a", ref("a")), ("d", ref("down"))], LogOptions())
    assert a.closed
