"""ResNets of BasicBlocks (ResNet-18/34, He et al. 2016) built from an architecture *spec*.

The spec is plain data (the format of ``paper_models.json``): a 7x7 stem conv and its 3x3 max-pool,
a list of blocks, the classifier's input width. Every conv is a ``ConvBN`` unit (bias-free conv,
BatchNorm, activation), so BN folding treats it as in the MBConv models. Modules are registered in
the order the forward runs their convs (a block's downsample conv after its two 3x3 convs), so
"conv index", every ``nn.Conv2d`` in registration order, is forward order.
"""
from torch import nn

from .mbconv import ConvBN


class BasicBlock(nn.Module):
    """3x3 ``unit1`` (ReLU), 3x3 ``unit2`` (no activation), optional 1x1 ``downsample`` of the
    identity; ReLU after the add."""

    def __init__(self, block):
        super().__init__()
        in_ch, out_ch, stride = block["in_ch"], block["out_ch"], block["stride"]
        self.unit1 = ConvBN(in_ch, out_ch, 3, stride, act="relu")
        self.unit2 = ConvBN(out_ch, out_ch, 3, 1, act=None)
        self.downsample = ConvBN(in_ch, out_ch, 1, stride, act=None) if block["downsample"] else None
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.unit2(self.unit1(x))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.act(y + identity)


class ResNet(nn.Module):
    """Stem (conv + ReLU, max-pool) + BasicBlocks + global average pool + linear classifier."""

    def __init__(self, spec, num_classes):
        super().__init__()
        stem = spec["stem"]
        self.stem = ConvBN(3, stem["out_ch"], stem["kernel"], stem["stride"], act="relu")
        self.pool = nn.MaxPool2d(stem["pool_kernel"], stem["pool_stride"], stem["pool_kernel"] // 2)
        self.blocks = nn.Sequential(*[BasicBlock(b) for b in spec["blocks"]])
        self.classifier = nn.Linear(spec["classifier_in"], num_classes)

    def forward(self, x):
        x = self.blocks(self.pool(self.stem(x)))
        return self.classifier(x.mean((2, 3)))
