"""The console side of a run: a progress bar with log lines above it, and Ctrl-C / SIGTERM handling."""

from __future__ import annotations

import signal
import threading


class Progress:
    """A rich progress bar showing env steps, steps/s, ε and the last evaluation return."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]env steps"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>8} steps/s  ε {task.fields[eps]}  eval {task.fields[eval]}"),
                TimeRemainingColumn(),
                console=Console(log_path=False),  # no "train.py:185" at the right margin of every line
            )
            self.task = self.bar.add_task("train", total=total, rate="-", eps="-", eval="-")
            self.bar.start()

    def update(self, completed: int, **fields) -> None:
        """Moves the bar to `completed` env steps and sets its fields (`rate`, `eps`, `eval`)."""
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, **fields)

    def log(self, message: str) -> None:
        """Prints a line above the bar (or to stdout without one)."""
        if self.bar is not None:
            self.bar.console.log(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        """Stops the bar, leaving it on screen."""
        if self.bar is not None:
            self.bar.stop()


class StopRequests:
    """Turns SIGINT / SIGTERM into a request to stop after the current chunk (a second SIGINT exits now)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
