import pytest
import torch

from napari_unet.model import UNet, UNetConfig


def test_paper_network_has_23_conv_layers_and_geometry():
    net = UNet(depth=5, base_channels=64)
    assert net.count_conv_layers() == 23
    assert net.output_size(572) == 388
    assert net.output_size(508) == 324
    assert net.halo == 92
    assert net.valid_input_size(570) == 572
    assert net.input_size(388) == 572


def test_invalid_sizes_are_rejected():
    net = UNet(depth=5, base_channels=2)
    with pytest.raises(ValueError):
        net.output_size(573)
    with pytest.raises(ValueError):
        net.output_size(100)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_forward_shape_matches_geometry(padding):
    net = UNet(depth=3, base_channels=4, padding=padding, n_classes=3).eval()
    n = net.valid_input_size(70)
    with torch.no_grad():
        y = net(torch.zeros(2, 1, n, n))
    expected = net.output_size(n)
    assert y.shape == (2, 3, expected, expected)
    if padding == "same":
        assert expected == n


def test_he_initialisation_std():
    torch.manual_seed(0)
    net = UNet(depth=3, base_channels=32)
    conv = net.downs[1][1][0]
    fan_in = conv.weight.shape[1] * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)


def test_config_roundtrip_and_validation():
    cfg = UNetConfig(in_channels=3, n_classes=7, depth=4, base_channels=8)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    assert len(cfg.class_names) == 7
    with pytest.raises(ValueError, match="padding"):
        UNetConfig(padding="reflect")


def test_dropout_at_end_of_contracting_path_only_in_training():
    net = UNet(depth=2, base_channels=2, dropout=0.5, padding="same")
    assert isinstance(net.dropout, torch.nn.Dropout2d)
    net.eval()
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(net(x), net(x))
