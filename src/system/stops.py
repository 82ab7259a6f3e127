"""The last seconds of a run: a SIGTERM or SIGINT after training waits until the report is written.

A run is either finished (``results.json`` and every other file of the after-fit report written,
exit 0) or stopped (it says so and can be resumed).  While Lightning trains, a SIGTERM stops the
run at the next step and a SIGINT (Ctrl-C) at once, as before; from the end of training
(``on_train_end``) until the report is written, :class:`HoldStops` only records the signal, and the
run ends finished, with one line saying which signal came (the report takes seconds: the
evaluation of the best checkpoint and a few files).  A stop that lands before training ended
leaves a ``last.ckpt`` that has trained every epoch; resuming it writes the report into that
same run folder (``src.train``).
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["HoldStops", "release"]

_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT (Ctrl-C)"}
#: the guards whose handlers are installed (one per running fit; ``release`` restores them)
_INSTALLED: list["HoldStops"] = []


class HoldStops(Callback):
    """Pass SIGTERM and SIGINT on while training runs; hold them from ``on_train_end`` until :meth:`uninstall`.

    Installed before ``fit`` (:meth:`install`), so that Lightning, which replaces the SIGTERM
    handler while it trains and restores the one it found when it tears down, restores this one:
    no moment between the end of training and the report is left to the default handler (which
    ends the process without a word).  Until training ends the handler does what the process did
    without it: SIGINT raises ``KeyboardInterrupt`` (Lightning's graceful stop), and a SIGTERM
    outside Lightning's own handler raises ``SIGTERMException`` (inside it, Lightning stops the run
    at the next step itself).
    """

    def __init__(self) -> None:
        self.holding = False
        #: the signal that came while holding ("SIGTERM", "SIGINT (Ctrl-C)"), else None
        self.held: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            return
        for signum in _NAMES:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        _INSTALLED.append(self)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        if self in _INSTALLED:
            _INSTALLED.remove(self)

    def _handle(self, signum: int, frame: Any) -> None:
        previous = self._previous.get(signum)
        if previous == signal.SIG_IGN:  # the process was told to ignore it (nohup, a background job)
            return
        if self.holding:
            self.held = self.held or _NAMES[signal.Signals(signum)]
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        if signal.getsignal(signal.SIGTERM) != self._handle:  # Lightning's handler called this one: it stops the run
            return
        raise SIGTERMException

    # ------------------------------------------------------------ Lightning's hooks
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.holding = True  # training is over: the rest of the run is the report

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        # the after-fit evaluation: Lightning installed its SIGTERM handler again, which would stop it
        if self.holding and self._previous:
            signal.signal(signal.SIGTERM, self._handle)


def release() -> None:
    """Restore the handlers every installed guard replaced (a command that ends, however it ends)."""
    while _INSTALLED:
        _INSTALLED[-1].uninstall()
