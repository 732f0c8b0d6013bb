"""Batches for a training run, from a data spec (device side; torch only).

Spec kinds:
- ``synthetic``: ``{"kind": "synthetic", "resolution": R, "num_classes": n}``; standard-normal RGB
  images and uniform labels from a seeded generator. Cost-only: no accuracy.
- ``image-transfer``: ``{"kind": "image-transfer", "resolution": R, "num_classes": n}`` with the
  loaded artifact (uint8 ``x_train``/``x_test`` of N x H x W grey images, int64 labels); images are
  normalised, repeated to 3 channels and resized to R x R on the fly, outside the timed region.
- ``episode``: ``{"kind": "episode", "resolution": R, "num_classes": ways, "episode": {...}}`` with
  the loaded pool artifact (uint8 ``x``: N x H x W grey or N x H x W x 3 RGB images, ``y``); the
  episode (``suites.data.episodes``) names the support and query images and their episode labels.
  Training batches are drawn from the support set (a seeded permutation per pass, ``batch`` images
  each); evaluation is the query set. RGB images are normalised with the ImageNet mean and std.
"""
import torch
import torch.nn.functional as F

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's
KINDS = ("synthetic", "image-transfer", "episode")


def to_model_input(images, resolution):
    """uint8 N x H x W grey or N x H x W x 3 RGB images -> float N x 3 x R x R, normalised."""
    if images.dim() == 4:
        x = images.permute(0, 3, 1, 2).float().div(255.0)
        x = (x - torch.tensor(RGB_MEAN).view(1, 3, 1, 1)) / torch.tensor(RGB_STD).view(1, 3, 1, 1)
    else:
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
        if spec["kind"] not in KINDS:
            raise ValueError("unknown data kind %r" % (spec["kind"],))
        if spec["kind"] != "synthetic" and arrays is None:
            raise ValueError("data kind %r needs its artifact's arrays" % spec["kind"])
        if spec["kind"] == "episode":
            episode = spec["episode"]
            if not episode["support"]:
                raise ValueError("the episode's support set is empty: there is nothing to adapt on (check the "
                                 "plan's data.episode.support)")
            self.support = torch.tensor(episode["support"]), torch.tensor(episode["support_labels"])
            self.query = torch.tensor(episode["query"]), torch.tensor(episode["query_labels"])

    @property
    def has_labels(self):
        return self.spec["kind"] != "synthetic"

    def next(self):
        if self.spec["kind"] == "synthetic":
            r = self.spec["resolution"]
            x = torch.randn(self.batch, 3, r, r, generator=self.generator)
            y = torch.randint(0, self.spec["num_classes"], (self.batch,), generator=self.generator)
            return x, y
        episodic = self.spec["kind"] == "episode"
        if len(self._order) < self.batch:
            n = len(self.support[0]) if episodic else self.arrays["x_train"].shape[0]
            self._order += torch.randperm(n, generator=self.generator).tolist()
        idx, self._order = self._order[:self.batch], self._order[self.batch:]
        idx = torch.tensor(idx)
        if episodic:
            return self._images(self.support[0][idx]), self.support[1][idx]
        return (to_model_input(self.arrays["x_train"][idx], self.spec["resolution"]),
                self.arrays["y_train"][idx])

    def _images(self, indices):
        return to_model_input(self.arrays["x"][indices], self.spec["resolution"])

    def support_set(self):
        """The whole support set (x, y) of an episode (its class prototypes, TinyTrain's selection)."""
        return self._images(self.support[0]), self.support[1]

    def evaluation(self, chunk=256):
        """Held-out (x, y) batches; empty for synthetic data."""
        if not self.has_labels:
            return
        if self.spec["kind"] == "episode":
            indices, labels = self.query
            for i in range(0, len(indices), chunk):
                yield self._images(indices[i:i + chunk]), labels[i:i + chunk]
            return
        x, y = self.arrays["x_test"], self.arrays["y_test"]
        for i in range(0, x.shape[0], chunk):
            yield to_model_input(x[i:i + chunk], self.spec["resolution"]), y[i:i + chunk]


def make_batches(spec, batch, seed, arrays=None):
    return Batches(spec, batch, seed, arrays)
