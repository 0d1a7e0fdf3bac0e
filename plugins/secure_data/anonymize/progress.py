"""Progress lines for long anonymization shards: done/total, images/s, ETA, every few seconds."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("secure_data.anonymize")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class Progress:
    """Counts images made durable and logs at most once per ``interval_s`` (and always at the end).

    ``already``: images a killed earlier try finished (counted as done, not in the rate).
    """

    label: str
    total: int
    already: int = 0
    interval_s: float = 5.0
    done_now: int = 0
    _started: float = field(default_factory=time.monotonic)
    _last: float | None = None

    def start(self) -> None:
        """Log the starting line and start the clock (called once the models are loaded, so the rate
        and the ETA measure the work, not the loading)."""
        self._started = time.monotonic()
        log.info("%s: %d images to do%s, models loaded", self.label, self.total - self.already,
                 f" ({self.already} done by an earlier try)" if self.already else "")

    def add(self, images: int) -> None:
        self.done_now += images
        now = time.monotonic()
        if self._last is None or now - self._last >= self.interval_s or self.done >= self.total:
            self._last = now
            log.info("%s", self.line(now))

    @property
    def done(self) -> int:
        return self.already + self.done_now

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-9, (now or time.monotonic()) - self._started)
        rate = self.done_now / elapsed
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 and left > 0 else ("0 s" if left <= 0 else "unknown")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        resumed = f", {self.already} from an earlier try" if self.already else ""
        return (f"{self.label}: {self.done}/{self.total} images ({pct:.0f} %){resumed}, "
                f"{rate:.1f} images/s, ETA {eta}")
