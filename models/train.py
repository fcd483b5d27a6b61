"""Training and fine-tuning: SGD with momentum and a cosine learning-rate schedule, seeded."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from edgebench.models.data import Dataset


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def train(
    model: nn.Module,
    data: Dataset,
    epochs: int,
    lr: float,
    seed: int = 0,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    after_step: Callable[[], None] | None = None,
    before_step: Callable[[nn.Module], None] | None = None,
    teacher: nn.Module | None = None,
    kd_temperature: float = 4.0,
    kd_alpha: float = 0.0,
    stop_after: int | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``data``'s training split.

    ``before_step(model)`` runs between backward and the optimiser step (e.g. network slimming's L1
    subgradient on BN scales); ``after_step()`` runs after it (e.g. re-applying a mask). With a
    ``teacher`` and ``kd_alpha > 0`` the loss is Hinton's distillation loss:
    ``(1 - alpha) * CE + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.
    ``stop_after``: run only the first that many epochs of the ``epochs``-long schedule (the same
    learning rates and batches as the full run up to there: an early checkpoint of that run).
    """
    if epochs <= 0:
        return model
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(epochs):
        if stop_after is not None and epoch >= stop_after:
            break
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            out = model(x[idx])
            loss = loss_fn(out, y[idx])
            if teacher is not None and kd_alpha > 0:
                loss = (1 - kd_alpha) * loss + kd_alpha * distillation_loss(out, teacher, x[idx], kd_temperature)
            loss.backward()
            if before_step is not None:
                before_step(model)
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
    model.eval()
    return model


def distillation_loss(student_logits: torch.Tensor, teacher: nn.Module, inputs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL divergence between softened teacher and student distributions, scaled by T^2."""
    teacher.eval()
    with torch.no_grad():
        target = torch.softmax(teacher(inputs) / temperature, dim=1)
    log_student = torch.log_softmax(student_logits / temperature, dim=1)
    return nn.functional.kl_div(log_student, target, reduction="batchmean") * temperature**2


@torch.inference_mode()
def logits(model: nn.Module, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(inputs[i : i + batch_size])) for i in range(0, len(inputs), batch_size)]
    return torch.cat(outs).numpy()


def top1(model: nn.Module, data: Dataset) -> float:
    return float(np.mean(logits(model, data.x_test).argmax(1) == data.y_test))
