"""Cross-checks of the host analysis against independent measurements and hand computations:
hook-counted saved bytes against the allocator, and counted FLOPs against explicit formulas."""
import pytest
import torch
from torch import nn

from harness.analysis import analyze
from harness.agreement import disagreement
from harness.analysis.allocator import allocator_saved_bytes
from harness.analysis.flops import count_flops
from harness.analysis.saved import measure_saved
from harness.units import Source
from tests.helpers import plan_for


@pytest.mark.parametrize("method", ["full", "last-layer", "bias-only", "bp-last-k"])  # k=6
@pytest.mark.parametrize("model", ["mbv2-w0.35", "mcunet-5fps", "proxyless-w0.3"])
def test_hook_count_agrees_with_the_allocator(model, method):
    result = analyze(plan_for(model=model, method=method, resolution=128, batch=1))
    hooks, allocator = result["measured_saved_bytes"], result["allocator_saved_bytes"]
    assert (allocator.unit, allocator.source) == ("bytes", Source.MEASURED) and allocator.how
    assert allocator.value > 0
    assert disagreement(hooks.value, allocator.value) is None, disagreement(hooks.value, allocator.value)


class _Square(torch.autograd.Function):
    """``x * x``; backward needs ``x``, of which forward keeps a copy: through
    ``save_for_backward``, or (``hide``) as a plain attribute of ``ctx``, out of the hooks'
    sight."""

    @staticmethod
    def forward(ctx, x, hide):
        kept = x.clone()
        ctx.hide = hide
        if hide:
            ctx.kept = kept
        else:
            ctx.save_for_backward(kept)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        kept = ctx.kept if ctx.hide else ctx.saved_tensors[0]
        return 2 * kept * grad, None


class _SquareNet(nn.Module):
    def __init__(self, hide):
        super().__init__()
        self.hide = hide
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        return self.classifier(_Square.apply(self.conv(x), self.hide).mean((2, 3)))


def test_a_tensor_hidden_on_ctx_is_missed_by_the_hooks_and_seen_by_the_allocator():
    x, y = torch.randn(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)
    counts = {}
    for hide in (False, True):
        torch.manual_seed(0)
        hooks = measure_saved(_SquareNet(hide), x, y)["saved_bytes"]
        counts[hide] = hooks, allocator_saved_bytes(_SquareNet(hide), x)
    (hooks_saved, allocator_saved), (hooks_hidden, allocator_hidden) = counts[False], counts[True]
    kept = 1 * 16 * 32 * 32 * 4  # the copy of the conv output: batch * channels * 32 * 32, fp32
    assert allocator_hidden == allocator_saved  # the allocator sees the copy either way
    assert hooks_saved - hooks_hidden == kept  # the hooks miss exactly the hidden copy
    assert disagreement(hooks_saved, allocator_saved) is None
    assert disagreement(hooks_hidden, allocator_hidden) is not None  # the same check as above catches it


# layer, input shape, forward MACs = batch * out channels * out pixels * MACs per output value.
# Biases cost no counted FLOPs (the counter counts matmuls and convs only).
FLOP_CASES = {
    "conv3x3-stride1": (lambda: nn.Conv2d(3, 8, 3, stride=1, padding=1), (2, 3, 16, 16),
                        2 * 8 * (16 * 16) * (3 * 3 * 3)),  # 110592
    "conv3x3-stride2": (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1), (2, 3, 16, 16),
                        2 * 8 * (8 * 8) * (3 * 3 * 3)),  # 27648
    "depthwise3x3-stride1": (lambda: nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                             (2, 16, 8, 8), 2 * 16 * (8 * 8) * (1 * 3 * 3)),  # 18432
    "depthwise3x3-stride2": (lambda: nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16,
                                               bias=False),
                             (2, 16, 8, 8), 2 * 16 * (4 * 4) * (1 * 3 * 3)),  # 4608
    "linear20-5": (lambda: nn.Linear(20, 5), (2, 20), 2 * 5 * 20),  # 200
}


@pytest.mark.parametrize("grads", ["weight", "input", "weight+input"])
@pytest.mark.parametrize("case", FLOP_CASES)
def test_counted_flops_match_the_hand_formulas(case, grads):
    make, shape, macs = FLOP_CASES[case]
    layer = make()
    layer.requires_grad_("weight" in grads)
    x = torch.randn(shape, requires_grad="input" in grads)
    # Flatten makes the layer's output the logits; cross-entropy adds no counted FLOPs.
    y = torch.zeros(shape[0], dtype=torch.long)
    flops = count_flops(nn.Sequential(layer, nn.Flatten()), x, y)
    assert flops["forward"] == 2 * macs
    # each requested gradient (input, weight) costs as many FLOPs as the forward
    assert flops["backward"] == 2 * macs * len(grads.split("+"))


def test_a_transposed_conv_is_counted_by_torch_formula():
    # ConvTranspose2d 4->4, k3 on 2x4x8x8: forward 2*N*Cin*Cout*k*k*Hin*Win; the input needs no
    # gradient, so its backward is the weight gradient alone (as many FLOPs as the forward)
    model = nn.Sequential(nn.ConvTranspose2d(4, 4, 3, bias=False), nn.Flatten(), nn.Linear(4 * 10 * 10, 3, bias=False))
    flops = count_flops(model, torch.randn(2, 4, 8, 8), torch.zeros(2, dtype=torch.long))
    conv = 2 * 2 * 4 * 4 * 3 * 3 * 8 * 8
    linear = 2 * 2 * 400 * 3
    assert flops == {"forward": conv + linear, "backward": conv + 2 * linear}
