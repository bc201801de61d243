"""cloudtaser.progress.Counter: the one progress counter of the library (milestones for a plain
callback, every item for one that asks, safe across threads)."""

from __future__ import annotations

import threading
from typing import Any

from cloudtaser.progress import Count, Counter


class _Live:
    """A callback that asks for every item, like RunProgress.message."""

    counts = True

    def __init__(self) -> None:
        self.seen: list[Count] = []

    def __call__(self, message: str) -> None:
        assert isinstance(message, Count)
        self.seen.append(message)


def test_a_plain_callback_gets_only_the_milestones_never_the_last_item() -> None:
    seen: list[Any] = []
    counter = Counter(seen.append, 30, "wrote {done}/{total} objects")
    for _ in range(30):
        counter.advance()
    assert [str(m) for m in seen] == ["wrote 10/30 objects", "wrote 20/30 objects"]
    assert all(m.milestone and m.total == 30 for m in seen)


def test_the_step_is_a_tenth_of_the_total_but_at_least_min_step() -> None:
    seen: list[Any] = []
    counter = Counter(seen.append, 3000, "checked {done}/{total} paths", min_step=200)
    counter.advance(250)
    counter.advance(100)
    assert [m.done for m in seen] == [350]  # the first multiple of 300 passed
    counter.advance(2650)
    assert [m.done for m in seen] == [350]  # the last item is the run's own to report


def test_a_callback_that_wants_counts_gets_every_advance_with_fields() -> None:
    live = _Live()
    counter = Counter(live, 20, "read {done}/{total} Secrets ({where})", min_step=10)
    counter.advance(4, where="namespace a")
    counter.advance(8, where="namespace b")
    assert [(str(m), m.milestone) for m in live.seen] == [
        ("read 4/20 Secrets (namespace a)", False),
        ("read 12/20 Secrets (namespace b)", True),
    ]


def test_a_growing_total_and_skipped_items() -> None:
    live = _Live()
    counter = Counter(live, 0, "listed {what}", milestones=False)
    counter.advance(remaining=3, what="a")
    counter.skip()
    counter.advance(remaining=0, what="b")
    assert [(m.done, m.total, m.milestone) for m in live.seen] == [(1, 4, False), (3, 3, False)]


def test_workers_sharing_a_counter_count_every_item_once() -> None:
    live = _Live()
    counter = Counter(live, 800, "x {done}")
    workers = [
        threading.Thread(target=lambda: [counter.advance() for _ in range(100)]) for _ in range(8)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert counter.done == 800
    assert sorted(m.done for m in live.seen) == list(range(1, 801))
