"""The console side of a run: a progress bar with log lines above it, and Ctrl-C / SIGTERM handling."""

from __future__ import annotations

import signal
import threading


class Progress:
    """A rich progress bar showing env steps, steps/s, ε and the last evaluation return."""

    def __init__(self, total: int, enabled: bool, silent: bool = False):
        """`enabled`: show the bar; `silent`: print nothing at all (the other processes of a
        multi-process run, whose lines process 0 already prints)."""
        self.bar = None
        self.silent = silent
        if enabled and not silent:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("[bold]env steps"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>8} steps/s  ε {task.fields[eps]}  eval {task.fields[eval]}"),
                TextColumn("{task.fields[eta]}"),
                console=Console(log_path=False),  # no "train.py:185" at the right margin of every line
            )
            self.task = self.bar.add_task("train", total=total, rate="-", eps="-", eval="-", eta="")
            self.bar.start()

    def update(self, completed: int, **fields) -> None:
        """Moves the bar to `completed` env steps and sets its fields (`rate`, `eps`, `eval`, `eta`)."""
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, **fields)

    def log(self, message: str) -> None:
        """Prints a line above the bar (or to stdout without one)."""
        if self.silent:
            return
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


class Remaining:
    """The time a run has left, from its rate since learning started: the random steps before it
    run many times faster than training, so a rate that counts them promises far too little."""

    def __init__(self, total_steps: int, learning_starts: int):
        self.total_steps, self.learning_starts = total_steps, learning_starts
        self.since: tuple[int, float] | None = None  # (env steps, seconds) at the first learning chunk's end

    def update(self, env_steps: int, now: float) -> float | None:
        """Returns the seconds left at the rate since learning started, else None (not known yet)."""
        if env_steps < self.learning_starts:
            return None
        if self.since is None:
            self.since = (env_steps, now)  # that chunk compiled the learner: measure from its end
            return None
        steps, seconds = env_steps - self.since[0], now - self.since[1]
        if steps <= 0 or seconds <= 0:
            return None
        return (self.total_steps - env_steps) * seconds / steps

    def describe(self, env_steps: int, seconds_left: float | None) -> str:
        """Returns the bar's ETA field: when learning starts, or the time left as h:mm:ss."""
        if env_steps < self.learning_starts:
            return f"learning from {self.learning_starts:,}"
        if seconds_left is None:
            return "measuring"
        return f"{_clock(seconds_left)} left"


def _clock(seconds: float) -> str:
    """Returns `seconds` as `[Dd ]h:mm:ss`."""
    whole = int(round(seconds))
    days, whole = divmod(whole, 86_400)
    hours, whole = divmod(whole, 3_600)
    minutes, secs = divmod(whole, 60)
    return (f"{days}d " if days else "") + f"{hours}:{minutes:02d}:{secs:02d}"
