"""An iterator produced on a background thread, a few items ahead of its consumer.

Reading signalling is a chain of two halves that cannot be split further without losing the
order that duplicate detection needs: parsing and checking a block of rows, then adding it to
the totals. Both halves are numpy and pyarrow work that releases the GIL, so running the first
on its own thread puts them on two cores while the order of the items stays exactly the same.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order while a background thread produces up to ``depth`` ahead.

    An exception raised while producing is raised here, at the item where it happened. When the
    consumer stops early (an error, ``break``), the producer stops at its next item.
    """
    ahead: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object, err: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                ahead.put((item, err), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:  # handed to the consumer, which raises it
            put(_END, err)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, err = ahead.get()
            if item is _END:
                if err is not None:
                    raise err
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
