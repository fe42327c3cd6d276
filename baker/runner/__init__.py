"""Several builds per run: which ones (--only/--except over templates' `builds:`), run side by side."""

from baker.runner.plan import Planned, UsageError, plan

__all__ = ["Planned", "UsageError", "plan"]
