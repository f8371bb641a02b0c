"""Counts of delivered and rejected examples, and the stop rule for datasets that are mostly broken."""

from __future__ import annotations

import dataclasses
from typing import Iterable

from jaxspeech.errors import DataQualityError, Reject, RejectReason

EXAMPLES_KEPT_PER_REASON = 3


@dataclasses.dataclass
class QualityCounters:
    """Running counts for one host's stream; ``to_dict``/``from_dict`` round-trip through JSON.

    ``seen`` = delivered + rejected. ``samples`` keeps the first few rejected paths per reason.
    """

    delivered: int = 0
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    samples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def seen(self) -> int:
        return self.delivered + sum(self.rejected.values())

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())

    def add(self, delivered: int, rejects: Iterable[Reject]) -> None:
        self.delivered += delivered
        for reject in rejects:
            reason = RejectReason(reject.reason).value
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            kept = self.samples.setdefault(reason, [])
            if len(kept) < EXAMPLES_KEPT_PER_REASON:
                kept.append(f"{reject.path} ({reject.message})")

    def check(self, max_bad_fraction: float, min_examples: int) -> None:
        """Raises ``DataQualityError`` once more than ``max_bad_fraction`` of >= ``min_examples`` are bad."""
        seen = self.seen
        if seen < min_examples or self.num_rejected <= max_bad_fraction * seen:
            return
        lines = [
            f"{self.num_rejected} of {seen} examples rejected ({self.num_rejected / seen:.1%}), "
            f"over the limit of {max_bad_fraction:.1%}:"
        ]
        for reason, count in sorted(self.rejected.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {reason}: {count}, e.g. " + "; ".join(self.samples.get(reason, [])))
        raise DataQualityError("\n".join(lines))

    def to_dict(self) -> dict:
        return {
            "seen": self.seen,
            "delivered": self.delivered,
            "rejected": dict(self.rejected),
            "samples": {k: list(v) for k, v in self.samples.items()},
        }

    @classmethod
    def from_dict(cls, state: dict) -> "QualityCounters":
        return cls(
            delivered=int(state["delivered"]),
            rejected={str(k): int(v) for k, v in state["rejected"].items()},
            samples={str(k): [str(p) for p in v] for k, v in state.get("samples", {}).items()},
        )
