import pytest
import torch

from suites import models


def _conv_macs(model, resolution):
    macs = []

    def hook(mod, inputs, out):
        macs.append(out.numel() // out.shape[0] * mod.in_channels // mod.groups
                    * mod.kernel_size[0] * mod.kernel_size[1])

    for conv in models.convs(model):
        conv.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    return sum(macs)


@pytest.mark.parametrize("name", models.names())
def test_counts_equal_published(name):
    spec = models.spec(name)
    published = models.published_counts(name)
    model = models.build(spec, 1000)
    backbone = sum(p.numel() for k, p in model.named_parameters() if not k.startswith("classifier"))
    assert backbone == published["backbone_params_float_bn"]
    assert _conv_macs(model, 128) == published["backbone_conv_macs"]
    fc = model.classifier.in_features * model.classifier.out_features
    assert _conv_macs(model, 128) + fc == published["with_1000_fc_macs"]
    assert len(models.convs(model)) == spec["n_convs"]


@pytest.mark.parametrize("name", models.names())
def test_conv_indices_match_the_spec(name):
    spec = models.spec(name)
    model = models.build(spec, 10)
    convs = models.convs(model)
    assert convs[spec["stem"]["conv_index"]] is model.stem.conv
    for block, module in zip(spec["blocks"], model.blocks):
        for part, index in block["conv_index"].items():
            assert convs[index] is getattr(module, part).conv, (block["block"], part)


def test_every_conv_is_bias_free_and_followed_by_bn():
    model = models.build(models.spec("mcunet-5fps"), 10)
    assert all(c.bias is None for c in models.convs(model))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == len(models.convs(model))


@pytest.mark.parametrize("resolution,classes", [(32, 5), (96, 7), (160, 2)])
def test_any_resolution_and_class_count(resolution, classes):
    model = models.build(models.spec("proxyless-w0.3"), classes)
    assert model(torch.zeros(2, 3, resolution, resolution)).shape == (2, classes)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(models.UnknownModel, match="mbv2-w0.35, mcunet-5fps, proxyless-w0.3"):
        models.spec("resnet-9000")
