"""Compensation U-Net and its ONNX round trip: identity at init, dynamic sizes, size budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sundae_compress.compensate.onnx_io import OnnxCompensator, check_onnx, export_onnx
from sundae_compress.compensate.unet import CompensationNet
from sundae_compress.errors import SundaeError

K = 8  # extra feature channels used throughout


def _perturbed(in_channels=3 + K, seed=0):
    """A net whose output is no longer the identity (head weights randomised)."""
    torch.manual_seed(seed)
    net = CompensationNet(in_channels)
    with torch.no_grad():
        for p in net.head.parameters():
            p.normal_(0.0, 0.05)
    return net


@pytest.fixture(scope="module")
def trained_like():
    net = _perturbed()
    return net, export_onnx(net)


@pytest.mark.parametrize("hw", [(64, 48), (100, 75), (1, 1), (33, 17)])
def test_identity_at_init(hw):
    net = CompensationNet(3 + K)
    x = torch.rand(1, 3 + K, *hw)
    y = net(x)
    assert y.shape == (1, 3, *hw)
    assert torch.equal(y, x[:, :3])


def test_gradients_reach_every_layer_after_one_step():
    net = CompensationNet(3 + K)
    x = torch.rand(1, 3 + K, 32, 40)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        loss = (net(x) - 0.5).abs().mean()
        loss.backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.slow
def test_default_size_budget(trained_like):
    net, onnx_bytes = trained_like
    assert net.num_params() < 250_000
    assert len(onnx_bytes) <= 1_000_000
    half = export_onnx(net, half=True, method="legacy")
    assert len(half) <= 0.55 * len(onnx_bytes)


@pytest.mark.parametrize("hw", [(48, 64), (75, 100), (7, 13)])
def test_onnx_matches_torch_dynamic_sizes(trained_like, hw):
    net, onnx_bytes = trained_like
    comp = OnnxCompensator(onnx_bytes)
    assert "CPUExecutionProvider" in comp.providers
    img = torch.rand(*hw, 3 + K)
    with torch.no_grad():
        ref = net.apply_image(img)
    got = comp(img.numpy())
    assert isinstance(got, np.ndarray) and got.shape == (*hw, 3)
    assert np.abs(got - ref.numpy()).max() <= 1e-4
    assert not np.allclose(got, img[..., :3].numpy(), atol=1e-3)  # really not the identity
    got_t = comp(img)
    assert isinstance(got_t, torch.Tensor) and torch.allclose(got_t, ref, atol=1e-4)


def test_check_onnx_reports_and_rejects(trained_like):
    net, onnx_bytes = trained_like
    assert check_onnx(net, onnx_bytes, sizes=[(64, 48), (100, 75)]) <= 1e-4
    other = _perturbed(seed=1)
    with pytest.raises(SundaeError):
        check_onnx(other, onnx_bytes)


def test_identity_survives_export():
    net = CompensationNet(3)
    comp = OnnxCompensator(export_onnx(net, method="legacy"))
    img = np.random.default_rng(0).random((30, 41, 3), dtype=np.float32)
    np.testing.assert_allclose(comp(img), img, atol=1e-6)


def test_half_weights_close(trained_like):
    net, _ = trained_like
    half = export_onnx(net, half=True, method="legacy")
    assert check_onnx(net, half, atol=5e-3) <= 5e-3


def test_wrong_channel_count_is_clear_error(trained_like):
    _, onnx_bytes = trained_like
    with pytest.raises(SundaeError, match="channels"):
        OnnxCompensator(onnx_bytes)(np.zeros((8, 8, 3), np.float32))


def test_garbage_onnx_is_clear_error():
    with pytest.raises(SundaeError):
        OnnxCompensator(b"not an onnx model")
