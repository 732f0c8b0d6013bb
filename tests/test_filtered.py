"""Gradient filtering's conv (``FilteredConv2d``) and the ``gradfilter`` method: the filtered
gradients against the paper's exactness argument and against a straightforward per-patch
reference written here; what the forward saves; bad input."""
import math
import random

import pytest
import torch
from torch import nn

from suites.ops import FilteredConv2d, native
from suites.ops.filtered import _kernel_sums, _over_kernel, _spread, by_planes, window_sums
from tests.helpers import require_c_kernels
from tests.test_ops import _saved

LAYOUTS = (torch.contiguous_format, torch.channels_last)


@pytest.fixture(params=["c", "torch"])
def backend(request, monkeypatch):
    """Each op library: the C kernels (built with this machine's compiler) and the torch ops a
    device without a compiler runs."""
    if request.param == "c":
        require_c_kernels()
    else:
        monkeypatch.setattr(native, "library", lambda: (None, "torch ops (test)"))
    return request.param


def _settings(seed, count):
    """Random convs: (batch, c_in, c_out, groups, size, kernel, stride, padding, r, layout); regular,
    depthwise and grouped; stride 1 and 2; sizes not divisible by r; batch > 1; both layouts."""
    rng = random.Random(seed)
    while count:
        kind = rng.choice(["regular", "depthwise", "grouped"])
        c_in = rng.choice([4, 8])
        c_out, groups = {"regular": (rng.choice([3, 6]), 1), "depthwise": (c_in, c_in),
                         "grouped": (8, 2)}[kind]
        kernel, stride = rng.choice([1, 3, 5]), rng.choice([1, 2])
        size, padding = rng.choice([6, 7, 8, 11, 13]), rng.choice([0, kernel // 2])
        out = (size + 2 * padding - kernel) // stride + 1
        r = rng.choice([1, 2, 3, 4])
        if out < 1 or r > out:
            continue
        count -= 1
        yield rng.choice([1, 2, 3]), c_in, c_out, groups, size, kernel, stride, padding, r, rng.choice(LAYOUTS)


def _run(conv, r, x, g):
    """Filtered forward (checked against the conv) and backward; (weight grad, input grad, bias grad)."""
    layer = FilteredConv2d.from_conv(conv, r)
    x = x.clone().requires_grad_()
    y = layer(x)
    torch.testing.assert_close(y, conv(x.detach()), rtol=1e-5, atol=1e-5)
    y.backward(g)
    grads = conv.weight.grad.clone(), x.grad, conv.bias.grad.clone()
    conv.weight.grad = conv.bias.grad = None
    return grads


def _reference(conv, r, x, g):
    """Per patch, by loops: the output gradient summed over the patch, the input averaged over its
    window of (r*stride)^2; weight gradient their products summed, broadcast over the kernel; input
    gradient the kernel-summed weight's 1x1 product spread evenly over the window."""
    w = r * conv.stride[0]
    batch, c_in, rows, cols = x.shape
    c_out, out_rows, out_cols = g.shape[1:]
    in_group, out_group = c_in // conv.groups, c_out // conv.groups
    theta = conv.weight.detach().sum((2, 3))
    gw, gx = torch.zeros(c_out, in_group), torch.zeros_like(x)
    for n in range(batch):
        for a in range(math.ceil(out_rows / r)):
            for b in range(math.ceil(out_cols / r)):
                summed = g[n, :, a * r:(a + 1) * r, b * r:(b + 1) * r].sum((1, 2))
                window = x[n, :, a * w:(a + 1) * w, b * w:(b + 1) * w]
                size = window.shape[1] * window.shape[2]
                mean = window.sum((1, 2)) / size
                for o in range(c_out):
                    group = o // out_group
                    gw[o] += summed[o] * mean[group * in_group:(group + 1) * in_group]
                for i in range(c_in):
                    group = i // in_group
                    outs = range(group * out_group, (group + 1) * out_group)
                    gx[n, i, a * w:(a + 1) * w, b * w:(b + 1) * w] = sum(theta[o, i - group * in_group] * summed[o]
                                                                        for o in outs) / size
    return gw[:, :, None, None].expand_as(conv.weight), gx, g.sum((0, 2, 3))


def _conv(c_in, c_out, groups, kernel, stride, padding, layout, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups).to(memory_format=layout)


@pytest.mark.parametrize("seed", range(3))
def test_filtered_gradients_equal_a_per_patch_reference(seed, backend):
    for batch, c_in, c_out, groups, size, kernel, stride, padding, r, layout in _settings(seed, 8):
        conv = _conv(c_in, c_out, groups, kernel, stride, padding, layout, seed)
        x = torch.randn(batch, c_in, size, size).contiguous(memory_format=layout)
        g = torch.randn_like(conv(x))
        for got, want in zip(_run(conv, r, x, g), _reference(conv, r, x, g)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels, size, stride, planes", [(6, 8, 1, True), (6, 15, 2, True),
                                                            (40, 4, 1, False), (40, 5, 2, False)])
def test_regular_nchw_convs_match_the_reference_in_both_product_forms(channels, size, stride, planes, backend):
    """The 1x1 products run per sample on NCHW planes where there are enough patches per channel
    and on rows otherwise; both agree with the reference (whole and cut windows at r = 2)."""
    conv = _conv(channels, channels, 1, 3, stride, 1, torch.contiguous_format)
    x = torch.randn(2, channels, size, size)
    g = torch.randn_like(conv(x))
    patches = tuple(-(-d // 2) for d in g.shape[2:])
    assert by_planes(window_sums(g, (2, 2), patches), channels, 1) is planes
    for got, want in zip(_run(conv, 2, x, g), _reference(conv, 2, x, g)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(2))
def test_the_compact_update_trains_one_value_per_pair_and_moves_the_weight_as_the_dense_one(seed):
    """``compact``: delta's gradient is the reference's per-pair value, no full-size weight gradient
    exists, and SGD steps (with momentum, folded by the next forward as any plain loop leaves them)
    move weight and bias as the same steps on the dense filtered gradient."""
    for batch, c_in, c_out, groups, size, kernel, stride, padding, r, layout in _settings(seed, 6):
        x = torch.randn(batch, c_in, size, size).contiguous(memory_format=layout)
        dense_conv, compact_conv = (_conv(c_in, c_out, groups, kernel, stride, padding, layout, seed) for _ in "ab")
        g = torch.randn_like(dense_conv(x))
        reference_gw = _reference(dense_conv, r, x, g)[0]
        dense, compact = FilteredConv2d.from_conv(dense_conv, r), FilteredConv2d.from_conv(compact_conv, r, compact=True)
        assert not compact.weight.requires_grad and compact.delta.shape == (c_out, c_in // groups, 1, 1)
        optimizers = [torch.optim.SGD(list(layer.parameters()), lr=0.1, momentum=0.9) for layer in (dense, compact)]
        for step in range(3):
            for layer, optimizer in zip((dense, compact), optimizers):
                (layer(x) * g).sum().backward()
                if step == 0 and layer is compact:
                    assert compact.weight.grad is None
                    torch.testing.assert_close(compact.delta.grad, reference_gw[:, :, :1, :1], rtol=1e-4, atol=1e-4)
                optimizer.step()
                optimizer.zero_grad()
        compact(x)  # folds the last step
        assert torch.count_nonzero(compact.delta) == 0
        torch.testing.assert_close(compact.weight, dense.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compact.bias, dense.bias, rtol=1e-5, atol=1e-6)


def _window_sums_reference(x, window, patches):
    """Zero-pad ``x`` to whole windows, crop it to ``patches`` of them, sum each."""
    (wh, ww), (ph, pw) = window, patches
    n, c, rows, cols = x.shape
    padded = nn.functional.pad(x, (0, max(0, pw * ww - cols), 0, max(0, ph * wh - rows)))
    return padded[:, :, :ph * wh, :pw * ww].reshape(n, c, ph, wh, pw, ww).sum((3, 5))


def test_the_c_kernels_and_the_torch_ops_pool_sum_kernels_and_spread_alike():
    """Window sums (widths 2 and 4, spelt out in C, and 3) with partial windows at the border,
    rows beyond the last window and a window taller than the input; kernel sums of 1x1, 3x3 (the
    unrolled case) and 5x5 weights, and the weight gradient broadcast back over their kernels
    (both layouts); spreading cropped to the input and padded where the input reaches beyond the
    last window, square and oblong windows. The last case of each (both last weights) is large
    enough to run on several threads."""
    require_c_kernels()
    torch.manual_seed(0)
    for shape, window, patches in (((2, 3, 7, 7), (2, 2), (4, 4)), ((2, 3, 13, 5), (4, 2), (3, 3)),
                                   ((1, 2, 3, 8), (4, 4), (1, 2)), ((2, 3, 8, 10), (3, 3), (3, 4)),
                                   ((4, 64, 30, 30), (2, 2), (15, 15))):
        x = torch.randn(*shape)
        want = _window_sums_reference(x, window, patches)
        torch.testing.assert_close(window_sums(x, window, patches), want, rtol=1e-5, atol=1e-5)
        cl = x.contiguous(memory_format=torch.channels_last)  # torch's pooling
        torch.testing.assert_close(window_sums(cl, window, patches), want, rtol=1e-5, atol=1e-5)
    for shape in ((6, 5, 1, 1), (6, 5, 3, 3), (6, 5, 5, 5), (128, 128, 3, 3), (96, 64, 5, 5)):
        weight = torch.randn(*shape)
        torch.testing.assert_close(_kernel_sums(weight), weight.sum((2, 3)), rtol=1e-5, atol=1e-5)
        per_pair = torch.randn(*shape[:2])
        for layout in LAYOUTS:
            like = weight.contiguous(memory_format=layout)
            broadcast = _over_kernel(per_pair, like)
            assert broadcast.is_contiguous(memory_format=layout)
            assert torch.equal(broadcast, per_pair[:, :, None, None].expand(shape))
    for n, patches, window, in_size in ((2, (4, 4), (2, 2), (7, 7)), (2, (3, 2), (4, 2), (13, 3)),
                                        (2, (2, 3), (3, 1), (5, 4)), (8, (17, 17), (2, 2), (33, 35))):
        v = torch.randn(n, 16, *patches)
        c_kernel = _spread(v, window, in_size, torch.contiguous_format)
        want = v.repeat_interleave(window[0], 2).repeat_interleave(window[1], 3)
        want = nn.functional.pad(want, (0, max(0, in_size[1] - want.shape[3]), 0, max(0, in_size[0] - want.shape[2])))
        assert c_kernel.is_contiguous() and torch.equal(c_kernel, want[:, :, :in_size[0], :in_size[1]])
        rows = v.contiguous(memory_format=torch.channels_last)  # as the channels-last backward has them
        assert torch.equal(_spread(rows, window, in_size, torch.channels_last), c_kernel)


def _patch_constant(t, r):
    """``t`` made constant over r x r patches (the last ones may be smaller)."""
    rows, cols = t.shape[2:]
    small = t[:, :, ::r, ::r]
    return small.repeat_interleave(r, 2).repeat_interleave(r, 3)[:, :, :rows, :cols].contiguous()


@pytest.mark.parametrize("seed", range(4))
def test_one_by_one_convs_are_exact_for_patch_constant_signals(seed):
    """The paper's argument: with the output gradient constant over each r x r patch and the input
    constant over each (r*s) x (r*s) window, a 1x1 conv's filtered weight and bias gradients are the
    exact ones, at any stride; its input gradient equals the exact one at stride 1, and at stride 2
    has the exact sum over every window (the exact one is 0 off the sampled positions)."""
    rng = random.Random(seed)
    for _ in range(6):
        stride, r = rng.choice([1, 2]), rng.choice([1, 2, 3])
        groups = rng.choice([1, 4])
        patches = rng.choice([2, 3])
        size = patches * r * stride
        conv = _conv(8, 4 * rng.choice([1, 2]), groups, 1, stride, 0, rng.choice(LAYOUTS), seed)
        x = _patch_constant(torch.randn(rng.choice([1, 3]), 8, size, size), r * stride)
        g = _patch_constant(torch.randn_like(conv(x)), r)
        filtered = _run(conv, r, x, g)
        x_exact = x.clone().requires_grad_()
        conv(x_exact).backward(g)
        torch.testing.assert_close(filtered[0], conv.weight.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(filtered[2], conv.bias.grad, rtol=1e-4, atol=1e-4)
        if stride == 1:
            torch.testing.assert_close(filtered[1], x_exact.grad, rtol=1e-4, atol=1e-4)
        window = r * stride
        sums = [nn.functional.avg_pool2d(t, window, divisor_override=1) for t in (filtered[1], x_exact.grad)]
        torch.testing.assert_close(sums[0], sums[1], rtol=1e-4, atol=1e-4)
        conv.weight.grad = conv.bias.grad = None


@pytest.mark.parametrize("r", [2, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_forward_saves_only_the_pooled_input(r, layout):
    batch, channels, size = 4, 16, 28
    conv = _conv(channels, channels, 1, 3, 1, 1, layout)
    layer = FilteredConv2d.from_conv(conv, r)
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=layout).requires_grad_()
    _, saved = _saved(lambda: layer(x))
    activations = [t for t in saved if not isinstance(t, nn.Parameter)]
    pooled = batch * channels * math.ceil(size / r) ** 2
    assert [t.numel() for t in activations] == [pooled]
    _, stock = _saved(lambda: conv(x))
    stock_bytes = sum(t.numel() * t.element_size() for t in stock if not isinstance(t, nn.Parameter))
    assert 4 * pooled <= (0.30 if r == 2 else 0.10) * stock_bytes


def test_stride_two_pools_over_windows_of_two_r():
    conv = _conv(4, 4, 1, 3, 2, 1, torch.contiguous_format)
    x = torch.randn(1, 4, 16, 16, requires_grad=True)
    _, saved = _saved(lambda: FilteredConv2d.from_conv(conv, 2)(x))
    (pooled,) = [t for t in saved if not isinstance(t, nn.Parameter)]
    assert pooled.shape == (1, 4, 4, 4)  # 8x8 output, 2x2 patches, 4x4 input windows
    torch.testing.assert_close(pooled[0, :, 0, 0], x.detach()[0, :, :4, :4].sum((1, 2)))


def test_bad_input_is_refused_with_a_reason():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    for patch in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="patch must be an integer >= 1"):
            FilteredConv2d.from_conv(conv, patch)
    with pytest.raises(ValueError, match="dilated"):
        FilteredConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=2, dilation=2), 2)
    with pytest.raises(ValueError, match="nn.Conv2d only"):
        FilteredConv2d.from_conv(nn.ConvTranspose2d(4, 4, 3), 2)
    with pytest.raises(ValueError, match="larger than the conv's 7x7 output"):
        FilteredConv2d.from_conv(conv, 8)(torch.randn(1, 4, 7, 7, requires_grad=True))
