"""Continuous pruning: remove a share of the Gaussians every few iterations while fine-tuning.

Instead of pruning once to the budget and then fine-tuning, SUNDAE can start from the unpruned
(or partially pruned) scene and shrink it gradually, letting the optimiser repair the damage of
each small step. A schedule is written ``"every=N,share=S"`` (optionally ``,start=I,stop=F``):

* every ``N`` iterations (first event at ``start``, default ``N``) the current count ``n`` drops to
  ``max(target, round(n * (1 - S)))``;
* the last event happens no later than ``stop`` (a fraction of the iterations, default 0.6, or an
  absolute iteration when > 1): if the budget has not been reached by then, that event prunes
  straight to the target, so there is always time left to recover.

:meth:`PruneSchedule.plan` turns that into explicit ``(iteration, count)`` events; the training
loop (:mod:`sundae_compress.compensate.train`) performs them with the spectral selector + merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from ..errors import SundaeError


@dataclass(frozen=True)
class PruneSchedule:
    every: int = 50
    share: float = 0.3
    start: Optional[int] = None
    stop: float = 0.6

    def __post_init__(self):
        if int(self.every) < 1:
            raise SundaeError(f"prune schedule: every must be >= 1, got {self.every}")
        if not 0.0 < float(self.share) < 1.0:
            raise SundaeError(f"prune schedule: share must be in (0, 1), got {self.share}")
        if self.start is not None and int(self.start) < 0:
            raise SundaeError(f"prune schedule: start must be >= 0, got {self.start}")
        if not float(self.stop) > 0:
            raise SundaeError(f"prune schedule: stop must be > 0, got {self.stop}")

    @classmethod
    def parse(cls, spec: Union[str, "PruneSchedule", dict, None]) -> Optional["PruneSchedule"]:
        """``"every=50,share=0.3[,start=0][,stop=0.6]"`` (or a dict / schedule / None) -> schedule."""
        if spec is None or isinstance(spec, PruneSchedule):
            return spec
        if isinstance(spec, dict):
            return cls(**spec)
        text = str(spec).strip()
        if text.lower() in ("", "none", "off"):
            return None
        fields = {}
        for part in text.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("every", "share", "start", "stop"):
                raise SundaeError(f"prune schedule {text!r}: expected every=N,share=S[,start=I][,stop=F], "
                                  f"got {part.strip()!r}")
            try:
                fields[key] = int(value) if key in ("every", "start") else float(value)
            except ValueError:
                raise SundaeError(f"prune schedule {text!r}: {key} needs a number, got {value.strip()!r}") from None
        if "every" not in fields or "share" not in fields:
            raise SundaeError(f"prune schedule {text!r}: both every= and share= are required")
        return cls(**fields)

    def last_iteration(self, iterations: int) -> int:
        stop = float(self.stop)
        last = int(round(stop * iterations)) if stop <= 1.0 else int(stop)
        return max(0, min(last, iterations - 1))

    def plan(self, initial: int, target: int, iterations: int) -> List[Tuple[int, int]]:
        """Events ``[(iteration, count_after), ...]`` taking ``initial`` down to ``target``.

        An event at iteration ``i`` happens before the optimisation step ``i`` (0-based). Empty
        when ``initial <= target``. The last event always lands exactly on ``target``.
        """
        initial, target = int(initial), int(target)
        if target < 1:
            raise SundaeError(f"prune schedule: target count must be >= 1, got {target}")
        if initial <= target:
            return []
        last = self.last_iteration(iterations)
        it = int(self.every) if self.start is None else int(self.start)
        it = min(it, last)
        events: List[Tuple[int, int]] = []
        n = initial
        while n > target:
            if it >= last:
                events.append((last, target))
                break
            n = max(target, int(round(n * (1.0 - float(self.share)))))
            if n >= events[-1][1] if events else n >= initial:  # rounding stalled: force progress
                n = max(target, (events[-1][1] if events else initial) - 1)
            events.append((it, n))
            it += int(self.every)
        return events

    def __str__(self) -> str:
        s = f"every={self.every},share={self.share:g}"
        if self.start is not None:
            s += f",start={self.start}"
        return s + f",stop={self.stop:g}"
