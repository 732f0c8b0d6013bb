"""The one shared training loop: a Trainer doing timed steps, timings leave through return values.

A step is split into forward (model + loss), backward and update (optimizer step + zeroing the
gradients). Only the clock is read inside a step; batches come from ``next_batch`` before the
first timestamp, so data preparation is never timed.
"""
import time

import torch
from torch import nn


class Trainer:
    """SGD over ``params``; on-device training uses no momentum (the SparseUpdate default)."""

    def __init__(self, model, params, lr, momentum=0.0, clock=time.perf_counter_ns):
        self.model = model
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
        self.clock = clock

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
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


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
