"""The op library against stock autograd: what is computed matches to float tolerance, what is
skipped is absent (no gradient, nothing saved), on random shapes."""
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from suites.ops import ChannelConv2d, FrozenConv2d, MaskedReLU, MaskedReLU6, bits
from tests.helpers import require_c_kernels


def _saved(fn):
    """``(result, [saved tensors])``: everything autograd saves while ``fn()`` runs."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        return fn(), saved


def _shapes(seed, count=12):
    """Random conv settings: (batch, in, out, size, kernel, stride, depthwise), stride 2, depthwise,
    odd sizes and batch > 1 all drawn."""
    rng = random.Random(seed)
    for _ in range(count):
        depthwise = rng.random() < 0.4
        c_in = rng.choice([3, 8, 12, 16])
        c_out = c_in if depthwise else rng.choice([4, 8, 24])
        yield (rng.choice([1, 2, 3]), c_in, c_out, rng.choice([5, 8, 11]), rng.choice([1, 3, 5]),
               rng.choice([1, 2]), depthwise)


def _conv(batch, c_in, c_out, size, kernel, stride, depthwise, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=c_in if depthwise else 1, bias=True)
    x = torch.randn(batch, c_in, size, size)
    return conv, x, torch.randn_like(conv(x))


def _against_stock(layer, stock, x, g, activation=lambda t: t):
    """Run ``layer`` and ``activation(stock(...))`` forward and backward on the same ``x`` and
    output gradient; check outputs and input gradients agree; return what ``layer`` saved."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, saved = _saved(lambda: layer(xa))
    ref = activation(stock(xb))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    return saved


def test_bits_round_trip_any_length_and_bit_order():
    for numel in (1, 7, 8, 9, 64, 1001):
        ones = (torch.rand(numel) < 0.5).float()
        packed = bits.pack(ones)
        assert packed.dtype == torch.uint8 and packed.numel() == bits.packed_bytes(numel) == -(-numel // 8)
        assert torch.equal(bits.unpack(packed, (numel,)), ones)
    assert bits.pack(torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0, 0, 1])).tolist() == [1, 2]  # LSB first


@pytest.mark.parametrize("masked,stock", [(MaskedReLU6, F.relu6), (MaskedReLU, F.relu)])
def test_masked_activations_match_stock_and_keep_one_bit_per_element(masked, stock):
    x = torch.tensor([-1.0, 0.0, 0.5, 6.0, 7.0, 3.0, -0.0, 5.999, 6.001]).repeat(3, 5, 1)
    x = (x * torch.rand_like(x).add(0.5)).requires_grad_()
    x.data[0, 0, :3] = torch.tensor([0.0, 6.0, -0.0])  # the boundaries, where no gradient passes
    ref = x.detach().clone().requires_grad_()
    g = torch.randn_like(x)
    y, saved = _saved(lambda: masked()(x))
    assert torch.equal(y, stock(ref))
    y.backward(g)
    stock(ref).backward(g)
    assert torch.equal(x.grad, ref.grad)
    assert [(t.dtype, t.numel()) for t in saved] == [(torch.uint8, -(-x.numel() // 8))]


def test_masked_relu6_saves_nothing_where_no_gradient_flows():
    x = torch.randn(2, 4, 5, 5)
    y, saved = _saved(lambda: MaskedReLU6()(x))
    assert saved == [] and y.grad_fn is None and torch.equal(y, F.relu6(x))


@pytest.mark.parametrize("shape", list(_shapes(1)))
@pytest.mark.parametrize("train_bias", [True, False])
def test_frozen_conv_gives_stock_gradients_and_saves_no_input(shape, train_bias):
    conv, x, g = _conv(*shape)
    conv.weight.requires_grad_(False)
    conv.bias.requires_grad_(train_bias)
    frozen = FrozenConv2d(conv, train_bias=train_bias)
    assert [n for n, p in frozen.named_parameters()] == (["bias"] if train_bias else [])
    saved = _against_stock(frozen, conv, x, g)
    if train_bias:
        assert torch.allclose(frozen.bias.grad, conv.bias.grad, atol=1e-5)
    assert [t.data_ptr() for t in saved] == [frozen.weight.data_ptr()]  # the weight only, no input


def test_frozen_conv_with_no_input_gradient_computes_the_bias_gradient_alone():
    conv, x, g = _conv(2, 8, 8, 6, 3, 2, False)
    frozen = FrozenConv2d(conv, train_bias=True)
    y, saved = _saved(lambda: frozen(x))  # the earliest trainable layer: x needs no gradient
    y.backward(g)
    assert saved == []
    assert torch.allclose(frozen.bias.grad, g.sum((0, 2, 3)), atol=1e-5)


def _channels(width, seed):
    rng = random.Random(seed)
    return sorted(rng.sample(range(width), max(1, width // rng.choice([1, 2, 4, 8]))))


@pytest.mark.parametrize("shape", list(_shapes(2)))
def test_channel_conv_gives_the_selected_slice_of_the_stock_gradients(shape):
    conv, x, g = _conv(*shape)
    depthwise = shape[-1]
    channels = _channels(shape[1], seed=sum(shape[:-1]))
    part = ChannelConv2d(conv, channels)
    saved = _against_stock(part, conv, x, g)
    index = torch.tensor(channels)
    expected = conv.weight.grad.index_select(0 if depthwise else 1, index)
    assert part.weight_part.grad.shape == expected.shape  # never a full-size gradient
    assert torch.allclose(part.weight_part.grad, expected, atol=1e-4)
    assert torch.allclose(part.bias.grad, conv.bias.grad, atol=1e-5)
    owned = {t.data_ptr() for t in list(part.parameters()) + list(part.buffers())}
    activations = [t for t in saved if t.data_ptr() not in owned]
    assert [tuple(t.shape) for t in activations] == [(shape[0], len(channels), shape[3], shape[3])]


def test_channel_conv_trains_only_its_channels_and_forward_sees_the_update():
    conv, x, g = _conv(2, 8, 6, 7, 3, 1, False)
    part = ChannelConv2d(conv, [1, 5])
    before = part.weight.clone()
    opt = torch.optim.SGD(part.parameters(), lr=0.1)
    part(x).backward(g)
    opt.step()
    changed = (part.weight_part.detach() != before[:, [1, 5]]).any()
    y = part(x)  # the buffer now holds the updated channels
    assert changed
    assert torch.equal(part.weight[:, [1, 5]], part.weight_part.detach())
    assert torch.equal(part.weight[:, [0, 2, 3, 4, 6, 7]], before[:, [0, 2, 3, 4, 6, 7]])
    assert torch.allclose(y, F.conv2d(x, part.weight, part.bias, padding=1), atol=1e-6)


def test_nothing_before_the_earliest_trainable_layer_is_back_propagated():
    torch.manual_seed(0)
    early, late = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
    frozen, act, trained = FrozenConv2d(early, train_bias=False), MaskedReLU6(), ChannelConv2d(late, [0, 3])
    x = torch.randn(1, 3, 8, 8)
    h, saved = _saved(lambda: act(frozen(x)))
    assert h.grad_fn is None and saved == []  # no graph at all before the first trainable layer
    trained(h).sum().backward()
    assert trained.weight_part.grad is not None


@pytest.mark.parametrize("bad,message", [
    (lambda: ChannelConv2d(nn.Conv2d(8, 8, 3), []), "non-empty subset"),
    (lambda: ChannelConv2d(nn.Conv2d(8, 8, 3), [8]), "non-empty subset"),
    (lambda: ChannelConv2d(nn.Conv2d(8, 8, 3, groups=2), [0]), "not 2 groups"),
    (lambda: FrozenConv2d(nn.Conv2d(8, 8, 3, padding="same"), True), "explicit zero padding"),
    (lambda: FrozenConv2d(nn.ConvTranspose2d(8, 8, 3), True), "only nn.Conv2d"),
])
def test_unsupported_layers_are_refused_clearly(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


def test_a_linear_whose_weight_is_frozen_keeps_no_input_natively():
    # the classifier with a frozen weight (its bias trained) needs no op of ours: addmm keeps only
    # the operand the requested gradients need
    linear = nn.Linear(12, 5)
    linear.weight.requires_grad_(False)
    x = torch.randn(3, 12, requires_grad=True)
    y, saved = _saved(lambda: linear(x))
    assert [t.data_ptr() for t in saved] == [linear.weight.data_ptr()]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("relu6", [False, True])
def test_pointwise_frozen_and_channel_convs_match_stock_at_batch_1_and_more(batch, relu6):
    # 1x1 convs run as matrix products (addmm at batch 1): the same values and gradients
    torch.manual_seed(batch)
    conv = nn.Conv2d(16, 24, 1)
    x = torch.randn(batch, 16, 5, 5)
    g = torch.randn(batch, 24, 5, 5)
    act = F.relu6 if relu6 else (lambda t: t)
    for layer, trained in ((FrozenConv2d(conv, True, relu6=relu6), None),
                           (ChannelConv2d(conv, [2, 7, 9], relu6=relu6), [2, 7, 9])):
        ref_conv = nn.Conv2d(16, 24, 1)
        ref_conv.load_state_dict(conv.state_dict())
        _against_stock(layer, ref_conv, x, g, act)
        torch.testing.assert_close(layer.bias.grad, ref_conv.bias.grad, rtol=1e-5, atol=1e-5)
        if trained:
            torch.testing.assert_close(layer.weight_part.grad, ref_conv.weight.grad[:, trained], rtol=1e-5, atol=1e-5)


def test_the_c_kernels_and_the_torch_ops_keep_the_same_mask_and_gradient():
    from suites.ops import activation

    require_c_kernels()
    y = torch.randn(3, 5, 7, 7) * 4
    y.view(-1)[:4] = torch.tensor([0.0, 6.0, -0.0, 3.0])
    g = torch.randn_like(y)
    for high, stock in ((6.0, F.relu6), (math.inf, F.relu)):
        out, packed = activation.clamp_and_mask(y, high)
        assert torch.equal(out, stock(y))
        assert torch.equal(packed, bits.pack(torch.ops.aten.hardtanh_backward(torch.ones_like(y), y, 0.0, high)))
    assert torch.equal(activation.masked_grad(g, packed), bits.unpack(packed, g.shape).mul_(g))
