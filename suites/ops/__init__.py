"""The op library that makes sparse backward real: what a plan freezes is never computed, what
backward does not need is never saved (``FrozenConv2d``, ``ChannelConv2d``, ``MaskedReLU6``,
``MaskedReLU``), and
gradient filtering computes its backward from pooled tensors (``FilteredConv2d``)."""
from .activation import MaskedReLU, MaskedReLU6
from .conv import ChannelConv2d, FrozenConv2d
from .filtered import FilteredConv2d

__all__ = ["ChannelConv2d", "FilteredConv2d", "FrozenConv2d", "MaskedReLU", "MaskedReLU6"]
