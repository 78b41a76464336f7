"""A loop that runs in a daemon thread of its own (the worker's engine, the evaluation stage)."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

log = logging.getLogger(__name__)


class Loop(ABC):
    """Subclasses implement :meth:`run`, returning once ``self._stop`` is set.

    A crash is kept in :attr:`error` (``/ready`` and ``/stats`` report it) and handed
    to ``on_crash`` (the process then stops: a supervisor restarts it).
    """

    #: the thread's name (in stack dumps and logs)
    name = "freshet-loop"

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def run(self) -> None:
        """The loop itself (in the thread :meth:`start` makes)."""

    def start(self, on_crash: Callable[[BaseException], None] | None = None) -> None:
        """Run :meth:`run` in a daemon thread; ``on_crash`` is called if it dies."""

        def main() -> None:
            try:
                self.run()
            except BaseException as exc:
                self.error = exc
                log.critical("%s stopped: %r", self.name, exc, exc_info=True)
                if on_crash is not None:
                    on_crash(exc)

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the loop to stop and wait up to ``timeout_s`` for its thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
