"""The one shared training loop: a Trainer doing timed steps, timings leave through return values.

A step is split into forward (model + loss), backward and update (optimizer step, folding the
compact steps of gradient-filtered convs into their weights, zeroing the gradients). Only the
clock is read inside a step; batches come from ``next_batch`` before the first timestamp, so data
preparation is never timed.
"""
import math
import time

import torch
from torch import nn

from suites.ops import FilteredConv2d

LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule, step, steps):
    """The learning rate's factor at ``step`` of ``steps``: 1 (constant), or a linear warm-up over
    the first 5% of the steps then a cosine decay to 0 (cosine; the SparseUpdate paper's schedule)."""
    if schedule == "constant":
        return 1.0
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class Trainer:
    """SGD over ``params``; on-device training uses no momentum (the SparseUpdate default). The
    learning rate follows ``schedule`` over ``steps`` updates (``step_count`` counts them)."""

    def __init__(self, model, params, lr, momentum=0.0, clock=time.perf_counter_ns, schedule="constant",
                 steps=1):
        if schedule not in LR_SCHEDULES:
            raise ValueError("unknown lr schedule %r; known: %s" % (schedule, ", ".join(LR_SCHEDULES)))
        self.model = model
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
        self.clock = clock
        self.lr, self.schedule, self.steps = lr, schedule, steps
        self.step_count = 0
        self._compact = [m for m in model.modules() if isinstance(m, FilteredConv2d) and m.delta is not None]

    def step(self, x, y):
        """One training step; returns the four timestamps (start, forward done, backward done, end)."""
        clock = self.clock
        t0 = clock()
        loss = self.loss_fn(self.model(x), y)
        t1 = clock()
        loss.backward()
        del loss  # its graph is released inside the step (timed as backward), as in ``bare_step``
        t2 = clock()
        self._update()
        t3 = clock()
        return t0, t1, t2, t3

    def bare_step(self, x, y):
        """The same step with no clock reads: the baseline of the timer-overhead measurement."""
        self.loss_fn(self.model(x), y).backward()
        self._update()

    def _update(self):
        if self.schedule != "constant":
            lr = self.lr * lr_factor(self.schedule, self.step_count, self.steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.step()
        for conv in self._compact:
            conv.fold_()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1


@torch.no_grad()
def accuracy(model, batches):
    """Top-1 accuracy of ``model`` (in eval mode, restored after) over ``(x, y)`` batches."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was_training)
    return correct / total if total else None
