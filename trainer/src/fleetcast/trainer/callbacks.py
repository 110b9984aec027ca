"""Lightning callbacks of a training run: per-epoch progress and the best weights in memory."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl

if TYPE_CHECKING:
    import torch

__all__ = ["BestWeights", "EpochProgress"]

logger = logging.getLogger("fleetcast.trainer")


def _metric(trainer: pl.Trainer, *names: str) -> float:
    for name in names:
        value = trainer.callback_metrics.get(name)
        if value is not None:
            return float(value)
    return math.nan


class EpochProgress(pl.Callback):
    """Logs, per epoch: train loss, validation loss, learning rate, epoch time, time remaining.

    ``history`` keeps the same values as dicts (they go to training_info.json).
    """

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self._epoch_start = 0.0
        self._durations: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after the epoch's validation loop in Lightning 2.x, so val_loss is current.
        seconds = time.perf_counter() - self._epoch_start
        self._durations.append(seconds)
        epoch = trainer.current_epoch
        lr = math.nan
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        row = {
            "epoch": epoch + 1,
            "train_loss": _metric(trainer, "train_loss_epoch", "train_loss"),
            "val_loss": _metric(trainer, "val_loss"),
            "lr": lr,
            "seconds": seconds,
        }
        self.history.append(row)
        left = max(trainer.max_epochs - epoch - 1, 0) if trainer.max_epochs else 0
        mean = sum(self._durations[-3:]) / len(self._durations[-3:])
        logger.info(
            "epoch %d/%s  train_loss %.4f  val_loss %.4f  lr %.2e  %.1fs  ~%s left "
            "(at most; early stopping may end sooner)",
            row["epoch"],
            trainer.max_epochs,
            row["train_loss"],
            row["val_loss"],
            lr,
            seconds,
            _fmt_duration(mean * left),
        )


def _fmt_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class BestWeights(pl.Callback):
    """Keeps a CPU copy of the weights of the epoch with the lowest ``monitor`` value.

    After fit, :meth:`restore` loads them back (no checkpoint file, no pickle). The copy, its
    value, epoch and training loss are part of Lightning's checkpoints (:meth:`state_dict`),
    so a resumed run keeps an earlier epoch's weights when no later epoch beats them (as
    EarlyStopping, whose state is checkpointed too, counts from that epoch).
    """

    def __init__(
        self, monitor: str = "val_loss", data: dict[str, Any] | None = None, resume_from: Any = None
    ) -> None:
        self.monitor = monitor
        self.data = data
        """The run's data and split (resume_check.fingerprint), saved in the checkpoints and
        compared with a resumed checkpoint's (``resume_from``, for the message)."""
        self.resume_from = resume_from
        self.best: float = math.inf
        self.best_epoch: int | None = None
        self.best_train_loss: float = math.nan
        self._state: dict[str, torch.Tensor] | None = None
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_count = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:  # summed on the device: no synchronisation per batch
            self._loss_sum = self._loss_sum + loss.detach()
            self._loss_count += 1

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = _metric(trainer, self.monitor)
        if math.isfinite(value) and value < self.best:
            self.best = value
            self.best_epoch = trainer.current_epoch + 1
            # The epoch's mean training loss so far (train_loss_epoch is logged only after
            # validation, after the checkpoint of this epoch is written).
            self.best_train_loss = (
                float(self._loss_sum) / self._loss_count if self._loss_count else math.nan
            )
            self._state = {
                k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()
            }

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_train_loss": self.best_train_loss,
            "weights": self._state,
            "data": self.data,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.data is not None:  # a resume: on the data of the run it continues only
            from fleetcast.trainer.resume_check import check_resume_data

            check_resume_data(self.resume_from, state_dict.get("data"), self.data)
        self.best = float(state_dict["best"])
        self.best_epoch = state_dict["best_epoch"]
        self.best_train_loss = float(state_dict.get("best_train_loss", math.nan))
        self._state = state_dict["weights"]

    def restore(self, module: pl.LightningModule) -> bool:
        """Load the best weights into ``module``; False when none were recorded."""
        if self._state is None:
            return False
        module.load_state_dict(self._state)
        return True
