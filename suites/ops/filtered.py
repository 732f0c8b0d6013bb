"""Gradient filtering (Yang et al., CVPR 2023): a conv whose backward sees its output gradient
averaged over r x r patches, computed from small tensors only.

Forward: the conv's output, exact. What it saves (``save_for_backward`` only): the **sum**-pooled
input over (r*s) x (r*s) windows (s: the stride), C_in x ceil(H_out/r) x ceil(W_out/r) per
sample, and the weight (a parameter). The kernel-summed weight is recomputed in backward.

Backward, with G the output gradient **summed** over each r x r patch and X the pooled input
divided by its window's size (its mean; windows and patches at the border may be smaller):

- weight gradient: one value per (out, in) pair, sum over batch and patches of G * X, broadcast
  to every kernel position (depthwise: per channel);
- input gradient: per patch the 1x1 product V = sum_o theta[o, i] * G[o] (theta: the weight
  summed over its kernel window; depthwise: elementwise) spread evenly over the patch's input
  window, V / window size at each of its positions, then cropped to the input;
- bias gradient: exact (the sum of the unfiltered output gradient).

Scale: for a 1x1 conv whose output gradient is constant over each patch and whose input is
constant over each window, the weight and bias gradients are exact, and so is the input gradient
at stride 1. At stride s > 1 the exact input gradient is zero off the sampled positions, which no
per-window constant can equal; spreading V evenly keeps each window's gradient sum exact (the
paper leaves the stride's scale implicit). For larger kernels all of it holds approximately.

The products are GEMMs (over N*Ph*Pw rows of channels; in NCHW, where there are enough patches
per channel, per sample on the planes: theta^T @ G_n and G_n @ X_n^T, ``by_planes``), the
pooling and spreading single passes (the NCHW pooling, the kernel sums, the weight gradient's
broadcast over the kernel and the NCHW spreading in C, ``filtered.c``, on torch's threads where
the device's compiler built it; torch ops otherwise); no full-size weight or input gradient is
ever computed then filtered.

Compact weight update (``compact=True``): the weight gradient has one value per (out, in) pair,
so the conv can train that pair value instead of the full weight. The weight is then frozen in
autograd and the trainable parameter is ``delta`` (Co x Ci/groups x 1 x 1, zero between steps):
backward writes the pair values there, never a full-size gradient, and ``fold_()`` (called by the
trainer after the optimizer step, and by the next forward if a step is still pending) adds
``delta`` to every kernel position of the weight and zeroes it. The dense gradient is the same
over a pair's kernel positions, so any optimizer whose step depends on the gradients only (SGD,
with or without momentum) moves the weight exactly as with it; weight decay would decay ``delta``
instead of the weight. Gradient and optimizer state are 1/k^2 of the weight's size.
"""
import torch
import torch.nn.functional as F
from torch import nn

from . import native


class _Filter:
    """A filtered conv's geometry: the conv's own settings, the patch r and the window r*s."""

    def __init__(self, conv, patch):
        self.stride, self.padding = tuple(conv.stride), tuple(conv.padding)
        self.groups, self.patch = conv.groups, patch
        self.window = tuple(patch * s for s in self.stride)
        self._sizes = {}  # window sizes per (patches, input size, device)

    def patches(self, out_size):
        return tuple(-(-o // self.patch) for o in out_size)

    def pooled_input(self, x, out_size):
        """Sum of ``x`` over each window, one window per output patch."""
        return window_sums(x, self.window, self.patches(out_size))

    @staticmethod
    def sizes(n, step, limit):
        """The number of positions each of ``n`` windows of ``step`` covers in ``limit``."""
        return torch.tensor([min(step, limit - p * step) for p in range(n)], dtype=torch.float32)

    def window_sizes(self, patches, in_size, device):
        """Positions in each window: one number where all windows are whole, else a Ph x Pw tensor
        on ``device`` (border windows may be cut by the input's edge), made once per shape."""
        if all(n * w <= i for n, w, i in zip(patches, self.window, in_size)):
            return float(self.window[0] * self.window[1])
        key = (tuple(patches), tuple(in_size), device)
        if key not in self._sizes:
            rows, cols = (self.sizes(n, w, i) for n, w, i in zip(patches, self.window, in_size))
            self._sizes[key] = (rows[:, None] * cols[None, :]).to(device)
        return self._sizes[key]


class _FilteredConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, delta, geometry):
        y = F.conv2d(x, weight, bias, geometry.stride, geometry.padding, 1, geometry.groups)
        out_size = tuple(y.shape[2:])
        problem = patch_fits(geometry.patch, out_size)
        if problem:
            raise ValueError(problem)
        ctx.geometry, ctx.in_size = geometry, tuple(x.shape[2:])
        ctx.save_for_backward(geometry.pooled_input(x, out_size), weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        pooled, weight = ctx.saved_tensors
        geometry = ctx.geometry
        r = geometry.patch
        summed = window_sums(grad, (r, r), geometry.patches(grad.shape[2:]))  # N x Co x Ph x Pw
        sizes = geometry.window_sizes(summed.shape[2:], ctx.in_size, grad.device)
        uniform = isinstance(sizes, float)  # then the division is the GEMMs' scale, free
        scale = 1.0 / sizes if uniform else 1.0
        planes = by_planes(summed, pooled.shape[1], geometry.groups) and pooled.is_contiguous()
        gw = gx = gd = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            per_pair = _pairs(summed, pooled if uniform else pooled / sizes, geometry.groups, scale, planes)
            if ctx.needs_input_grad[3]:  # compact: the pair values are the gradient of delta
                gd = per_pair[:, :, None, None]
            else:
                gw = _over_kernel(per_pair, weight)
        if ctx.needs_input_grad[0]:
            v = _products(summed, _kernel_sums(weight), geometry.groups, scale, planes)
            gx = _spread(v if uniform else v / sizes, geometry.window, ctx.in_size, _layout(grad))
        gb = summed.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None  # every output is in one patch
        return gx, gw, gb, gd, None


def window_sums(x, window, patches):
    """Sum of ``x`` (N x C x H x W) over windows of ``window`` laid edge to edge from the top left,
    ``patches`` of them: N x C x Ph x Pw. A window reaching beyond the input sums what is inside;
    the input beyond the last window is in none. Contiguous NCHW maps go through the C kernel
    where it is built, others through torch's pooling (fast in channels-last)."""
    (wh, ww), (ph, pw) = window, patches
    n, c, rows, cols = x.shape
    lib = native.kernels(x)
    if lib is not None:
        out = x.new_empty(n, c, ph, pw)
        lib.odt_window_sums(x.data_ptr(), out.data_ptr(), n * c, rows, cols, wh, ww, ph, pw, torch.get_num_threads())
        return out
    rows, cols = min(ph * wh, rows), min(pw * ww, cols)
    x = x[:, :, :rows, :cols]
    if rows < wh or cols < ww:  # one window larger than the input: pool over what there is
        x = F.pad(x, (0, max(0, ww - cols), 0, max(0, wh - rows)))
    return F.avg_pool2d(x, window, window, ceil_mode=True, divisor_override=1)


def _kernel_sums(weight):
    """The weight summed over its kernel window, Co x Ci/groups: a view for 1x1 kernels; for a
    contiguous weight one pass of the C kernel (torch reduces the short innermost kernel axis
    slowly: a matrix-vector product took 0.5-0.8 ms on a 512x512x3x3 weight, the kernel 0.45-0.67
    on one thread and 0.36-0.46 on two, inside a training step), else a matrix-vector product; a
    channels-last weight reduces along its strided kernel axes directly."""
    if not weight.is_contiguous():
        return weight.sum((2, 3))
    taps = weight.shape[2] * weight.shape[3]
    if taps == 1:
        return weight.view(weight.shape[:2])
    lib = native.kernels(weight)
    if lib is None:
        return torch.mv(weight.view(-1, taps), weight.new_ones(taps)).view(weight.shape[:2])
    out = weight.new_empty(weight.shape[:2])
    lib.odt_kernel_sums(weight.data_ptr(), out.data_ptr(), out.numel(), taps, torch.get_num_threads())
    return out


def _over_kernel(per_pair, weight):
    """``per_pair`` (Co x Ci/groups) at every kernel position: the weight gradient, shaped and laid
    out as ``weight``. A view for 1x1 kernels; for a contiguous weight one pass of the C kernel
    (torch's copy from the expanded view, with its stride-0 innermost axis, took 0.70-0.76 ms for
    a 512x512x3x3 weight, the kernel 0.18 warm and 0.39 after a sweep of the caches), else that
    copy (channels-last: the copy moves whole rows of channels)."""
    taps = weight.shape[2] * weight.shape[3]
    lib = native.kernels(weight)
    if taps == 1 or lib is None:
        return per_pair[:, :, None, None].expand_as(weight).contiguous(memory_format=_layout(weight))
    per_pair, out = per_pair.contiguous(), weight.new_empty(weight.shape)
    lib.odt_kernel_broadcast(per_pair.data_ptr(), out.data_ptr(), per_pair.numel(), taps, torch.get_num_threads())
    return out


def _layout(t):
    return torch.channels_last if t.dim() == 4 and not t.is_contiguous() and \
        t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def _rows(t):
    """``t`` (N x C x H x W) as N x H x W x C: a view for channels-last tensors."""
    return t.permute(0, 2, 3, 1)


def _mm(a, b, scale):
    """``scale * (a @ b)`` (batched for 3-d operands), the scale applied inside the GEMM rather
    than by a second pass over an operand or the result (on a warm 512x512 result that pass took
    0.03 ms beside the product's 0.08-0.13)."""
    if a.dim() == 2:
        return torch.addmm(a.new_zeros(()), a, b, beta=0, alpha=scale)
    return torch.baddbmm(a.new_zeros(()), a, b, beta=0, alpha=scale)


PLANES_FROM = 8  # batch 32, r = 2, NCHW, ms rows -> planes with the copies each form needs, for
# 64 channels on 28 x 28 patches / 128 on 14 x 14 / 256 on 7 x 7 / 512 on 4 x 4: weight-gradient
# GEMM 12.3 -> 2.5 / 3.3 -> 2.1 / 3.0 -> 2.8 / 2.5 -> 18.7 (its N x 512 x 512 partial products),
# input-gradient GEMM 5.1 -> 2.2 / 3.2 -> 1.6 / 1.8 -> 2.0 / 1.9 -> 4.1


def by_planes(summed, in_ch, groups):
    """Whether the 1x1 products run per sample on the NCHW planes (N GEMMs over the patches, no
    transposed copies) rather than on rows (one GEMM over N x patches, after copying both operands
    to N x Ph x Pw x C): for contiguous regular convs with at least 1/PLANES_FROM as many patches
    as channels."""
    n, out_ch, ph, pw = summed.shape
    return groups == 1 and summed.is_contiguous() and PLANES_FROM * ph * pw >= max(out_ch, in_ch)


def _pairs(summed, mean, groups, scale, planes):
    """Per (out, in-of-group) pair, ``scale`` times the sum over batch and patches of summed * mean;
    summed: N x Co x Ph x Pw, mean: N x Ci x Ph x Pw; ``planes``: as ``by_planes`` chose."""
    n, out_ch, in_ch = summed.shape[0], summed.shape[1], mean.shape[1]
    if planes:
        return _mm(summed.view(n, out_ch, -1), mean.view(n, in_ch, -1).transpose(1, 2), scale).sum(0)
    g, mean = _rows(summed).reshape(-1, out_ch), _rows(mean).reshape(-1, in_ch)
    if groups == 1:
        return _mm(g.t(), mean, scale)
    if in_ch == groups:  # depthwise (any multiplier): each output channel sees one input channel
        return (g.view(-1, groups, out_ch // groups) * mean.view(-1, groups, 1)).sum(0).view(out_ch, 1) * scale
    g = g.view(-1, groups, out_ch // groups).transpose(0, 1)
    mean = mean.view(-1, groups, in_ch // groups).transpose(0, 1)
    return _mm(g.transpose(1, 2), mean, scale).reshape(out_ch, in_ch // groups)


def _products(summed, theta, groups, scale, planes):
    """Per patch ``scale`` times the 1x1 product sum_o theta[o, i] * summed[o]: N x Ci x Ph x Pw
    (NCHW planes or a view of rows); summed: N x Co x Ph x Pw, theta: Co x Ci/groups; ``planes``:
    as ``by_planes`` chose."""
    n, out_ch, ph, pw = summed.shape
    in_ch = theta.shape[1] * groups
    if planes:
        return _mm(theta.t().expand(n, -1, -1), summed.view(n, out_ch, -1), scale).view(n, in_ch, ph, pw)
    g = _rows(summed).reshape(-1, out_ch)
    per_group = out_ch // groups
    if groups == 1:
        out = _mm(g, theta, scale)
    elif theta.shape[1] == 1:  # depthwise
        out = (g.view(-1, groups, per_group) * theta.view(groups, per_group)).sum(2) * scale
    else:
        out = _mm(g.view(-1, groups, per_group).transpose(0, 1), theta.view(groups, per_group, -1), scale)
        out = out.transpose(0, 1).reshape(g.shape[0], -1)
    return out.view(n, ph, pw, in_ch).permute(0, 3, 1, 2)


def _spread(v, window, in_size, layout):
    """Each value of ``v`` (N x C x Ph x Pw) at every position of its window, as an N x C x H x W
    gradient in ``layout``, cropped (or padded with zeros) to ``in_size``. NCHW goes through the C
    kernel where it is built (contiguous rows; torch's copy into the stride-0 innermost axis of
    the expanded NCHW view is several times slower), else through the same view as channels-last."""
    (wh, ww), (n, c, ph, pw) = window, v.shape
    rows, cols = in_size
    if layout == torch.contiguous_format:
        planes = v.contiguous()
        lib = native.kernels(planes)
        if lib is not None:
            out = v.new_empty(n, c, rows, cols)
            lib.odt_spread(planes.data_ptr(), out.data_ptr(), n * c, ph, pw, wh, ww, rows, cols,
                           torch.get_num_threads())
            return out
        full = planes[:, :, :, None, :, None].expand(n, c, ph, wh, pw, ww).reshape(n, c, ph * wh, pw * ww)
    else:
        v = v.permute(0, 2, 3, 1)  # rows
        full = v[:, :, None, :, None, :].expand(n, ph, wh, pw, ww, c).reshape(n, ph * wh, pw * ww, c)
        full = full.permute(0, 3, 1, 2)
    if ph * wh >= rows and pw * ww >= cols:
        return full[:, :, :rows, :cols]
    return F.pad(full[:, :, :rows, :cols], (0, max(0, cols - pw * ww), 0, max(0, rows - ph * wh)))


def patch_fits(patch, out_size):
    """Why ``patch`` cannot filter an output map of ``out_size`` (None: it can)."""
    if patch > max(out_size):
        return ("gradient filter patch %d is larger than the conv's %dx%d output; the largest patch that "
                "means anything here is %d" % ((patch,) + tuple(out_size) + (max(out_size),)))
    return None


def check_filterable(conv, patch):
    """Raise ValueError unless ``conv`` can be filtered with ``patch``."""
    if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
        raise ValueError("gradient filter patch must be an integer >= 1, got %r" % (patch,))
    if type(conv) is not nn.Conv2d:
        raise ValueError("gradient filtering supports nn.Conv2d only, got %s" % type(conv).__name__)
    if tuple(conv.dilation) != (1, 1):
        raise ValueError("gradient filtering does not support dilated convs (dilation %s)" % (tuple(conv.dilation),))
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("gradient filtering needs explicit zero padding, got padding=%r padding_mode=%r"
                         % (conv.padding, conv.padding_mode))


class FilteredConv2d(nn.Module):
    """A conv trained with gradient filtering of patch ``patch``; shares the conv's parameters.
    ``compact``: train the weight through ``delta``, one value per (out, in) pair (module docstring)."""

    def __init__(self, conv, patch, compact=False):
        super().__init__()
        check_filterable(conv, patch)
        self.geometry = _Filter(conv, patch)
        self.weight, self.bias = conv.weight, conv.bias
        self.delta = None
        if compact:
            self.weight.requires_grad_(False)
            self.delta = nn.Parameter(self.weight.new_zeros(self.weight.shape[:2] + (1, 1)))
            self._folded = self.delta._version

    @classmethod
    def from_conv(cls, conv, patch, compact=False):
        return cls(conv, patch, compact)

    @torch.no_grad()
    def fold_(self):
        """Add a pending compact step (``delta``) to every kernel position of the weight and zero
        ``delta``; nothing to do when ``delta`` has not changed since the last fold."""
        if self.delta is None or self.delta._version == self._folded:
            return
        self.weight.add_(self.delta)
        self.delta.zero_()
        self._folded = self.delta._version

    def forward(self, x):
        g = self.geometry
        self.fold_()
        if not torch.is_grad_enabled():
            return F.conv2d(x, self.weight, self.bias, g.stride, g.padding, 1, g.groups)
        return _FilteredConv.apply(x, self.weight, self.bias, self.delta, g)

    def extra_repr(self):
        return "patch=%d, stride=%s, groups=%d%s" % (self.geometry.patch, self.geometry.stride, self.geometry.groups,
                                                    ", compact" if self.delta is not None else "")
