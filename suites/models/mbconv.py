"""MobileNet-style inverted-residual (MBConv) networks built from an architecture *spec*.

The spec is plain data (the format of ``tiny_models.json``): a stem conv, a list of blocks, an
optional final 1x1 ``head`` conv (MobileNetV2's 320 -> 1280), the classifier's input width. The
same spec travels inside an ExecutionPlan, so a device rebuilds the exact model the host analysed.
Every conv is bias-free and followed by BatchNorm; "conv index" counts every ``nn.Conv2d`` in
forward order (module registration order here), classifier excluded.
"""
from torch import nn


ACTIVATIONS = {"relu6": nn.ReLU6, "relu": nn.ReLU, None: nn.Identity}


class ConvBN(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + activation ``act`` (a key of ``ACTIVATIONS``; None: none);
    BN may later be folded into the conv."""

    def __init__(self, in_ch, out_ch, kernel, stride, groups=1, act="relu6"):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """Optional 1x1 expansion ``pw1``, depthwise ``dw``, 1x1 projection ``pw2`` (no activation)."""

    def __init__(self, block):
        super().__init__()
        in_ch, mid_ch, out_ch = block["in_ch"], block["mid_ch"], block["out_ch"]
        self.pw1 = ConvBN(in_ch, mid_ch, 1, 1) if block["expand"] != 1 else None
        self.dw = ConvBN(mid_ch, mid_ch, block["kernel"], block["stride"], groups=mid_ch)
        self.pw2 = ConvBN(mid_ch, out_ch, 1, 1, act=None)
        self.residual = bool(block["residual"])

    def forward(self, x):
        y = self.pw1(x) if self.pw1 is not None else x
        y = self.pw2(self.dw(y))
        return x + y if self.residual else y


class MBConvNet(nn.Module):
    """Stem + inverted-residual blocks + optional 1x1 ``head`` + global average pool + linear
    classifier."""

    def __init__(self, spec, num_classes):
        super().__init__()
        stem, head = spec["stem"], spec.get("head")
        self.stem = ConvBN(3, stem["out_ch"], stem["kernel"], stem["stride"])
        self.blocks = nn.Sequential(*[InvertedResidual(b) for b in spec["blocks"]])
        self.head = ConvBN(spec["blocks"][-1]["out_ch"], head["out_ch"], 1, 1) if head is not None else None
        self.classifier = nn.Linear(spec["classifier_in"], num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        if self.head is not None:
            x = self.head(x)
        return self.classifier(x.mean((2, 3)))


def convs(model):
    """Every Conv2d of ``model`` in forward order: position i is conv index i."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]
