"""One conv as a model: the GradFilter paper's single-layer micro-benchmark (3x3, stride 1).

The image (3 channels) is converted to the spec's memory ``layout`` (``nchw`` or
``channels_last``) inside the forward, so the conversion is timed, and widened to the conv's
input channels by a fixed random 1x1 projection (a buffer, not a layer: the model's only conv is
the benchmarked one). That input needs its gradient, as a conv's inside a network does, so
backward computes both the weight and the input gradient (then dropped; the input is no leaf,
so nothing keeps it alive but what the conv saves). The conv's output gradient is a fixed
dense random tensor in the layout (made at the first backward of each batch shape, seeded, then
reused; made in backward, it is no tensor the forward keeps), as in the paper's
micro-benchmark, which times one conv's backward for a given output gradient: the model's loss
(a linear classifier over the pooled output) only carries it, and costs both arms the same
little. A cost-only model: what it learns means nothing. The spec fixes the input
``resolution``.
"""
import torch
import torch.nn.functional as F
from torch import nn

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


class SingleConv(nn.Module):
    def __init__(self, spec, num_classes):
        super().__init__()
        if spec["layout"] not in LAYOUTS:
            raise ValueError("single-conv spec layout %r; known: %s" % (spec["layout"], ", ".join(LAYOUTS)))
        self.layout, self.resolution = LAYOUTS[spec["layout"]], spec["resolution"]
        kernel, stride = spec["kernel"], spec["stride"]
        self.conv = nn.Conv2d(spec["in_ch"], spec["out_ch"], kernel, stride, kernel // 2,
                              groups=spec.get("groups", 1)).to(memory_format=self.layout)
        widen = torch.randn(spec["in_ch"], 3, 1, 1, generator=torch.Generator().manual_seed(0))
        self.register_buffer("widen", widen.contiguous(memory_format=self.layout))
        self.output_grads = {}  # batch shape -> the fixed output gradient
        self.sink = torch.zeros(0, requires_grad=True)  # makes the conv's input need a gradient
        self.classifier = nn.Linear(spec["out_ch"], num_classes)

    def forward(self, x):
        if tuple(x.shape[2:]) != (self.resolution, self.resolution):
            raise ValueError("this single-conv model takes %dx%d inputs, got %s: set the job's resolution to %d"
                             % (self.resolution, self.resolution, tuple(x.shape[2:]), self.resolution))
        x = F.conv2d(x.contiguous(memory_format=self.layout), self.widen)
        if torch.is_grad_enabled():
            x = _NeedsGrad.apply(x, self.sink)
        y = self.conv(x)
        if not y.requires_grad:
            return self.classifier(y.mean((2, 3)))
        return self.classifier(_WithOutputGrad.apply(y, self))


class _NeedsGrad(torch.autograd.Function):
    """Identity whose output needs a gradient (``sink`` does), which it drops in backward."""

    @staticmethod
    def forward(ctx, x, sink):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return None, None


class _WithOutputGrad(torch.autograd.Function):
    """Forward: the spatial mean of ``y``; backward: the model's fixed gradient for ``y``."""

    @staticmethod
    def forward(ctx, y, model):
        ctx.model, ctx.shape, ctx.device, ctx.dtype = model, tuple(y.shape), y.device, y.dtype
        return y.mean((2, 3))

    @staticmethod
    def backward(ctx, _):
        grads = ctx.model.output_grads
        if ctx.shape not in grads:
            fixed = torch.randn(ctx.shape, generator=torch.Generator().manual_seed(1), dtype=ctx.dtype)
            grads[ctx.shape] = fixed.to(ctx.device).contiguous(memory_format=ctx.model.layout)
        return grads[ctx.shape], None
