import threading
import time

import pytest

from urbanfusion.pipeline.prefetch import prefetched


def test_items_come_in_order_while_produced_on_another_thread():
    threads = set()

    def produce():
        for i in range(50):
            threads.add(threading.current_thread().name)
            yield i

    assert list(prefetched(produce(), depth=3)) == list(range(50))
    assert threads == {"prefetch"}


def test_an_error_while_producing_is_raised_at_its_item():
    def produce():
        yield 1
        yield 2
        raise ValueError("row 3 is bad")

    got = []
    with pytest.raises(ValueError, match="row 3 is bad"):
        for item in prefetched(produce()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer():
    made = []
    closed = threading.Event()

    def produce():
        try:
            for i in range(1_000):
                made.append(i)
                yield i
        finally:
            closed.set()

    for item in prefetched(produce(), depth=2):
        if item == 3:
            break
    assert closed.wait(5)
    time.sleep(0.1)
    assert len(made) <= 3 + 1 + 2 + 1  # the items taken, the one in hand, the queue, one more
