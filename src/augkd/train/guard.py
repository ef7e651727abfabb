"""Non-finite loss guard: a NaN or infinite training loss stops the run or skips the step (``optim.nonfinite``).

On the CPU the loss is checked at every step (the check costs nothing there). On a GPU, ``error`` mode records
the first bad step on the device and reads it back every :data:`CUDA_CHECK_EVERY` steps and at the end of the
epoch, so the guard adds no host-device synchronization to most steps; the run still stops before the epoch's
checkpoint is written, so ``last.pt`` never holds a diverged model. ``skip`` mode must decide before the
optimizer step, so it checks every step on every device.

Example:
    >>> guard = NonFiniteGuard("skip", patience=3, device=torch.device("cpu"))
    >>> guard.step_ok(torch.tensor(float("nan")), epoch=0, step=0), guard.skipped
    (False, 1)
"""

from __future__ import annotations

import torch
from torch import nn

from augkd import faults

__all__ = ["CUDA_CHECK_EVERY", "NonFiniteError", "NonFiniteGuard", "check_finite_state"]

#: Steps between read-backs of the on-device flag (``error`` mode on a GPU).
CUDA_CHECK_EVERY = 50


class NonFiniteError(RuntimeError):
    """The training loss became NaN or infinite (``optim.nonfinite=error``, or too many skips in a row)."""


class NonFiniteGuard:
    """Watches the loss of every optimizer step of one epoch.

    Args:
        mode: ``error`` (stop) or ``skip`` (leave the step out).
        patience: with ``skip``, this many bad steps in a row stop the run.
        device: where the loss lives.
    """

    def __init__(self, mode: str, patience: int, device: torch.device) -> None:
        if mode not in ("error", "skip"):
            raise ValueError(f"optim.nonfinite must be error or skip; got {mode!r}")
        self.mode, self.patience = mode, patience
        self.lazy = mode == "error" and device.type != "cpu"
        self.skipped = 0
        self._in_a_row = 0
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # 0-based step, -1: none yet
        self._epoch = 0

    def step_ok(self, loss: torch.Tensor, epoch: int, step: int) -> bool:
        """Whether optimizer step ``step`` (0-based over the run) may apply ``loss``; raises when the run must stop.

        Raises:
            NonFiniteError: a non-finite loss with ``mode="error"``, or ``patience`` of them in a row with ``skip``.
        """
        if faults.armed("nan_loss_at_step", step + 1):
            loss = loss.detach() + float("nan")
        self._epoch = epoch
        if self.lazy:
            bad = ~torch.isfinite(loss.detach())
            self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)
            if (step + 1) % CUDA_CHECK_EVERY == 0:
                self.check()
            return True
        if bool(torch.isfinite(loss.detach())):
            self._in_a_row = 0
            return True
        if self.mode == "error":
            raise self._error(step, f"is {loss.item()}")
        self.skipped += 1
        self._in_a_row += 1
        if self._in_a_row >= self.patience:
            raise self._error(step, f"was not finite for {self._in_a_row} steps in a row (optim.nonfinite_patience)")
        return False

    def check(self) -> None:
        """Raise if a step recorded on the device had a non-finite loss (``error`` mode on a GPU; a no-op else)."""
        if self.lazy and (first := int(self._first_bad.item())) >= 0:
            raise self._error(first, "is not finite")

    def _error(self, step: int, what: str) -> NonFiniteError:
        return NonFiniteError(
            f"epoch {self._epoch + 1}, step {step + 1}: the training loss {what}; the run stops here and the last "
            f"checkpoint stays as it was (try a lower optim.lr, optim.grad_clip, or optim.nonfinite=skip)"
        )


def check_finite_state(modules: dict[str, nn.Module | None], epoch: int) -> None:
    """Raise when a weight or buffer went NaN/Inf (a loss can stay finite while, say, BatchNorm statistics overflow).

    Called after each epoch, before evaluation and checkpoints, so a diverged model is never saved.

    Raises:
        NonFiniteError: names the first few bad entries.
    """
    entries = [
        (key if name == "model" else f"{name}.{key}", value)
        for name, module in modules.items()
        if module is not None
        for key, value in module.state_dict().items()
        if value.is_floating_point()
    ]
    finite = torch.stack([torch.isfinite(v).all() for _, v in entries]) if entries else torch.ones(1, dtype=torch.bool)
    if not bool(finite.all()):  # one host-device synchronization per epoch
        bad = [key for (key, _), ok in zip(entries, finite.tolist()) if not ok]
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteError(
            f"epoch {epoch + 1}: the model holds non-finite values after training ({shown}); the run stops here and "
            "the last checkpoint stays as it was (try a lower optim.lr or optim.grad_clip)"
        )
