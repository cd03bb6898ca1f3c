"""What an operation on the pool (apply, restart, rollout) planned, did, and stopped at.

One shape for all of them, because the operator reads them the same way: the steps a dry run
would take, the steps done, the step that failed (the operation stops there, in a state the
next run starts from), and notes that did not stop it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OperationReport:
    planned: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed is None
