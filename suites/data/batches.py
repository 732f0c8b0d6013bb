"""Batches for a training run, from a data spec (device side; torch only).

Spec kinds:
- ``synthetic``: ``{"kind": "synthetic", "resolution": R, "num_classes": n}``; standard-normal RGB
  images and uniform labels from a seeded generator. Cost-only: no accuracy.
- ``image-transfer``: ``{"kind": "image-transfer", "resolution": R, "num_classes": n}`` with the
  loaded artifact (uint8 ``x_train``/``x_test`` of N x H x W grey images, int64 labels); images are
  normalised, repeated to 3 channels and resized to R x R on the fly, outside the timed region.
"""
import torch
import torch.nn.functional as F

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def to_model_input(images, resolution):
    """uint8 N x H x W grey images -> float N x 3 x R x R, normalised."""
    x = (images.float().div(255.0) - MNIST_MEAN) / MNIST_STD
    x = x.unsqueeze(1).expand(-1, 3, -1, -1)
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


class Batches:
    """Seeded stream of training batches plus (for real data) the held-out evaluation batches."""

    def __init__(self, spec, batch, seed, arrays=None):
        self.spec = spec
        self.batch = batch
        self.generator = torch.Generator().manual_seed(seed)
        self.arrays = arrays
        self._order = []
        if spec["kind"] == "image-transfer" and arrays is None:
            raise ValueError("data kind 'image-transfer' needs its artifact's arrays")
        if spec["kind"] not in ("synthetic", "image-transfer"):
            raise ValueError("unknown data kind %r" % (spec["kind"],))

    @property
    def has_labels(self):
        return self.spec["kind"] != "synthetic"

    def next(self):
        if self.spec["kind"] == "synthetic":
            r = self.spec["resolution"]
            x = torch.randn(self.batch, 3, r, r, generator=self.generator)
            y = torch.randint(0, self.spec["num_classes"], (self.batch,), generator=self.generator)
            return x, y
        if len(self._order) < self.batch:
            n = self.arrays["x_train"].shape[0]
            self._order += torch.randperm(n, generator=self.generator).tolist()
        idx, self._order = self._order[:self.batch], self._order[self.batch:]
        idx = torch.tensor(idx)
        return (to_model_input(self.arrays["x_train"][idx], self.spec["resolution"]),
                self.arrays["y_train"][idx])

    def evaluation(self, chunk=256):
        """Held-out (x, y) batches; empty for synthetic data."""
        if not self.has_labels:
            return
        x, y = self.arrays["x_test"], self.arrays["y_test"]
        for i in range(0, x.shape[0], chunk):
            yield to_model_input(x[i:i + chunk], self.spec["resolution"]), y[i:i + chunk]


def make_batches(spec, batch, seed, arrays=None):
    return Batches(spec, batch, seed, arrays)
