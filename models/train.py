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
) -> nn.Module:
    """Train ``model`` in place on ``data``'s training split. ``after_step`` runs after each optimiser step."""
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
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
    model.eval()
    return model


@torch.inference_mode()
def logits(model: nn.Module, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(inputs[i : i + batch_size])) for i in range(0, len(inputs), batch_size)]
    return torch.cat(outs).numpy()


def top1(model: nn.Module, data: Dataset) -> float:
    return float(np.mean(logits(model, data.x_test).argmax(1) == data.y_test))
