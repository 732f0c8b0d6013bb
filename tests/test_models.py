import pytest
import torch

from suites.counts import forward_layers, layer_macs
from suites import models
from suites.methods import fold_batchnorm, layer_table

TINY = ["mbv2-w0.35", "mcunet-5fps", "proxyless-w0.3"]
PAPER = ["mobilenetv2", "resnet18", "resnet34"]


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


def test_both_files_are_registered():
    names = models.names()
    assert set(TINY + PAPER) <= set(names)
    assert {models.spec(n)["family"] for n in set(names) - set(TINY + PAPER)} == {"conv"}  # micro-benchmarks
    assert [models.spec(n)["family"] for n in PAPER] == ["mbconv", "resnet", "resnet"]
    assert all(models.sparse_update_schemes(n) == {} for n in PAPER)


@pytest.mark.parametrize("name", TINY)
def test_counts_equal_published(name):
    spec = models.spec(name)
    published = models.published_counts(name)
    model = models.build(spec, 1000)
    backbone = sum(p.numel() for k, p in model.named_parameters() if not k.startswith("classifier"))
    assert backbone == published["backbone_params_float_bn"]
    assert _conv_macs(model, 128) == published["backbone_conv_macs"]
    fc = model.classifier.in_features * model.classifier.out_features
    assert _conv_macs(model, 128) + fc == published["with_1000_fc_macs"]


@pytest.mark.parametrize("name", PAPER)
def test_paper_models_match_published_sizes_at_224(name):
    published = models.published_counts(name)
    model = models.build(models.spec(name), 1000)
    params = sum(p.numel() for p in model.parameters())
    layers = forward_layers(model, torch.zeros(1, 3, 224, 224))
    macs = sum(layer_macs(layer.module, layer.out_shape) for layer in layers
               if isinstance(layer.module, (torch.nn.Conv2d, torch.nn.Linear)))
    assert params == pytest.approx(published["params"], rel=0.01)
    assert macs == pytest.approx(published["macs"], rel=0.02)


@pytest.mark.parametrize("name", TINY + PAPER)
def test_conv_indices_match_the_spec(name):
    spec = models.spec(name)
    model = models.build(spec, 10)
    convs = models.convs(model)
    assert len(convs) == spec["n_convs"]
    assert convs[spec["stem"]["conv_index"]] is model.stem.conv
    if "head" in spec:
        assert convs[spec["head"]["conv_index"]] is model.head.conv
    for block, module in zip(spec["blocks"], model.blocks):
        for part, index in block["conv_index"].items():
            assert convs[index] is getattr(module, part).conv, (block["block"], part)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_conv_index_is_forward_order(name):
    model = models.build(models.spec(name), 10)
    ran = [layer.name for layer in forward_layers(model, torch.zeros(1, 3, 64, 64))
           if isinstance(layer.module, torch.nn.Conv2d)]
    assert [layer["name"] for layer in layer_table(model) if layer["kind"] == "conv"] == ran


def test_tiny_models_have_no_head():
    model = models.build(models.spec("mcunet-5fps"), 10)
    assert model.head is None
    assert not any(k.startswith("head") for k in model.state_dict())


def test_mcunet_runs_at_224():
    model = models.build(models.spec("mcunet-5fps"), 1000).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_every_conv_is_bias_free_and_followed_by_bn():
    model = models.build(models.spec("mcunet-5fps"), 10)
    assert all(c.bias is None for c in models.convs(model))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == len(models.convs(model))


@pytest.mark.parametrize("resolution,classes", [(32, 5), (96, 7), (160, 2)])
def test_any_resolution_and_class_count(resolution, classes):
    model = models.build(models.spec("proxyless-w0.3"), classes)
    assert model(torch.zeros(2, 3, resolution, resolution)).shape == (2, classes)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(models.UnknownModel, match="mbv2-w0.35, mcunet-5fps, mobilenetv2, proxyless-w0.3, "
                                                  "resnet18, resnet34"):
        models.spec("resnet-9000")
