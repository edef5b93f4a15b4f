"""The DAA network against independent float64 implementations written straight from the paper's equations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import ModelConfig
from model.daa import binary_codes, daa, reference_ages
from model.encoders import create_encoder, list_encoders
from model.factory import build_model, count_parameters
from model.inference import predict_with_flip
from model.network import DAAOutput
from training.losses import daa_loss, distillation_loss, reference_loss

EPS = 1e-5


def np_stats(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Section 3.2: per-channel mean and sqrt(mean squared deviation + eps), by explicit sums over h x w."""
    c, h, w = e.shape
    mu = np.array([sum(e[k, i, j] for i in range(h) for j in range(w)) / (h * w) for k in range(c)])
    var = np.array([sum((e[k, i, j] - mu[k]) ** 2 for i in range(h) for j in range(w)) / (h * w) for k in range(c)])
    return mu, np.sqrt(var + EPS)


def np_eq7(e: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    mu, sigma = np_stats(e)
    out = np.zeros((len(s),) + e.shape)
    for y in range(len(s)):
        for c in range(e.shape[0]):
            out[y, c] = (s[y] - sigma[c]) * (e[c] - mu[c]) / sigma[c] + t[y] - mu[c]
    return out


def np_eq3(e: np.ndarray, e_templates: np.ndarray) -> np.ndarray:
    mu, sigma = np_stats(e)
    out = np.zeros((len(e_templates),) + e.shape)
    for y, ey in enumerate(e_templates):
        mu_y, sigma_y = np_stats(ey)
        for c in range(e.shape[0]):
            out[y, c] = (sigma_y[c] - sigma[c]) * (e[c] - mu[c]) / sigma[c] + mu_y[c] - mu[c]
    return out


def np_eq5(e: np.ndarray, e_templates: np.ndarray) -> np.ndarray:
    mu, sigma = np_stats(e)
    out = np.zeros((len(e_templates),) + e.shape)
    for y, ey in enumerate(e_templates):
        mu_y = ey.sum() / ey.size  # Eq. 4
        sigma_y = np.sqrt(((ey - mu_y) ** 2).sum() / ey.size + EPS)
        for c in range(e.shape[0]):
            out[y, c] = (sigma_y - sigma[c]) * (e[c] - mu[c]) / sigma[c] + mu_y - mu[c]
    return out


def np_conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Zero-padded 3x3 convolution (cross-correlation, as in every deep learning framework)."""
    c, h, wd = x.shape
    xp = np.zeros((c, h + 2, wd + 2))
    xp[:, 1:-1, 1:-1] = x
    out = np.zeros((w.shape[0], h, wd))
    for o in range(w.shape[0]):
        for i in range(h):
            for j in range(wd):
                out[o, i, j] = (xp[:, i : i + 3, j : j + 3] * w[o]).sum() + b[o]
    return out


def np_decoder(delta: np.ndarray, dec) -> float:
    """Eq. 8 in eval mode: Conv3x3 -> BN (running stats) -> ReLU -> GAP -> Linear."""
    conv = np_conv3x3(delta, dec.conv.weight.detach().numpy(), dec.conv.bias.detach().numpy())
    bn = dec.bn
    g, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    rm, rv = bn.running_mean.numpy(), bn.running_var.numpy()
    z = (conv - rm[:, None, None]) / np.sqrt(rv[:, None, None] + bn.eps) * g[:, None, None] + beta[:, None, None]
    pooled = np.maximum(z, 0).mean(axis=(1, 2))
    return float(pooled @ dec.fc.weight.detach().numpy()[0] + dec.fc.bias.detach().numpy()[0])


def randomise_bn(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=m.running_mean.dtype) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=m.running_var.dtype) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen, dtype=m.weight.dtype) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen, dtype=m.bias.dtype) * 0.1)


def test_binary_codes_are_bin_y_plus_1():
    codes = binary_codes(100, 8)
    for y in range(100):
        expected = [1.0 if ch == "1" else -1.0 for ch in format(y + 1, "08b")]
        assert codes[y].tolist() == expected


def test_reference_sampling_matches_table7():
    assert reference_ages(100, 1).tolist() == list(range(100))
    for k in (1, 2, 5, 10, 20, 50):
        refs = reference_ages(100, k).tolist()
        assert refs == [i * k for i in range(100 // k)]
    with pytest.raises(ValueError):
        reference_ages(100, 0)


def test_eq7_against_paper_formula():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(1, 4, 3, 3))
    s, t = rng.normal(size=6), rng.normal(size=6)
    got = daa(torch.from_numpy(e), torch.from_numpy(s), torch.from_numpy(t), EPS).numpy()[0]
    np.testing.assert_allclose(got, np_eq7(e[0], s, t), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["template_single", "template_multi"])
def test_template_equations_against_paper_formula(mode):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="c3ae", daa_mode=mode, num_references=5)
    model = build_model(cfg).double().eval()
    model.set_templates(torch.randint(0, 256, (5, 3, 128, 128), dtype=torch.uint8))
    x = torch.rand(1, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        e = model.encoder(x)
        e_t = model.encoder(model.templates.double() / 255.0)
        scale, shift = model.style(torch.arange(5))
        got = daa(e, scale, shift, EPS)[0].numpy()
    ref = (np_eq3 if mode == "template_single" else np_eq5)(e[0].numpy(), e_t.numpy())
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-10)


def test_decoder_and_eq9_against_paper_formula():
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="c3ae", num_references=4)).double().eval()
    randomise_bn(model)
    x = torch.rand(2, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        out = model(x, factorised=False)
        e = model.encoder(x).numpy()
        s, t = (v.numpy() for v in model.mapping(torch.arange(4)))
    for b in range(2):
        deltas = [np_decoder(d, model.decoder) for d in np_eq7(e[b], s, t)]
        np.testing.assert_allclose(out.deltas[b].numpy(), deltas, rtol=1e-9, atol=1e-9)
        estimates = np.arange(4) - np.array(deltas)  # Eq. 9: x' = mean over y of (y - Delta_y)
        assert out.age[b].item() == pytest.approx(estimates.mean(), rel=1e-9)
        assert out.spread[b].item() == pytest.approx(estimates.std(), rel=1e-7)


def test_smooth_l1_loss_eq10():
    pred = torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64)
    true = torch.tensor([1.5, 4.0, 0.0], dtype=torch.float64)
    d = np.abs(pred.numpy() - true.numpy())
    expected = np.where(d < 1, 0.5 * d**2, d - 0.5).mean()
    assert daa_loss(pred, true).item() == pytest.approx(expected)


@pytest.mark.parametrize("encoder", list_encoders())  # registering an encoder tests it
@pytest.mark.parametrize("batch", [1, 8])
def test_shapes(encoder, batch):
    model = build_model(ModelConfig(encoder=encoder)).eval()
    enc = model.encoder
    with torch.no_grad():
        e = enc(torch.rand(batch, 3, 128, 128))
        out = model(torch.rand(batch, 3, 128, 128))
    assert e.shape == (batch, enc.out_channels, enc.out_size, enc.out_size)
    assert out.age.shape == (batch,) and out.spread.shape == (batch,)
    assert out.deltas.shape == (batch, 100) and out.references.tolist() == list(range(100))
    with torch.no_grad():
        sub = model(torch.rand(batch, 3, 128, 128), interval=20)
    assert sub.deltas.shape == (batch, 5) and sub.references.tolist() == [0, 20, 40, 60, 80]


def test_gradients_reach_the_mapping_mlp():
    model = build_model(ModelConfig(encoder="c3ae")).train()
    out = model(torch.rand(4, 3, 128, 128))
    daa_loss(out.age, torch.tensor([20.0, 30.0, 40.0, 50.0])).backward()
    for name, p in model.mapping.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("encoder", list_encoders())  # registering an encoder tests it
@pytest.mark.parametrize("mode", ["binary", "template_multi"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_factorised_head_equals_direct(encoder, mode, train_mode):
    torch.manual_seed(0)
    # The identity does not depend on the input size: encoders that read large inputs (FaceRes, 224 px) run at
    # 128 px here, which keeps this float64 test fast.
    size = None if create_encoder(encoder).input_size <= 160 else 128
    model = build_model(ModelConfig(encoder=encoder, encoder_input_size=size, daa_mode=mode, num_references=20)).double()
    randomise_bn(model)
    if mode.startswith("template"):
        model.set_templates(torch.randint(0, 256, (20, 3, 128, 128), dtype=torch.uint8))
    model.train(train_mode)
    x = torch.rand(3, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        direct = model(x, factorised=False).deltas
        fact = model(x, factorised=True).deltas
    rel = ((fact - direct).abs().max() / direct.abs().max()).item()
    assert rel < 1e-5


def test_factorised_head_backprop_matches_direct():
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="c3ae")).double().train()
    x = torch.rand(4, 3, 128, 128, dtype=torch.float64)
    grads = []
    for fact in (False, True):
        model.zero_grad()
        model(x, factorised=fact).age.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("encoder,paper", [("resnet18", 11_000_000), ("c3ae", 58_000)])
def test_parameter_counts_match_table1(encoder, paper):
    n = count_parameters(build_model(ModelConfig(encoder=encoder)))
    assert abs(n - paper) / paper < 0.10, n


def test_no_daa_baseline_predicts_directly():
    model = build_model(ModelConfig(encoder="c3ae", daa_mode="none", init_age=30.0)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 128, 128))
    torch.testing.assert_close(out.age, (out.references - out.deltas).mean(1))
    assert torch.all(out.spread == 0)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        ModelConfig(daa_mode="bogus")
    with pytest.raises(ValueError):
        ModelConfig(num_references=300)
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"encoder": "c3ae", "colour": "red"})
    with pytest.raises(ValueError):
        build_model({"encoder": "vgg99"})


def test_training_step_reduces_loss_on_fixed_batch():
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="c3ae", init_age=30.0)).train()
    x, y = torch.rand(8, 3, 128, 128), torch.linspace(5, 80, 8)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(30):
        loss = daa_loss(model(x).age, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_losses_are_smooth_l1_as_eq_10_and_the_reference_term_state():
    # Eq. 10 on ages: errors 0 and 2 cost 0 and 2 - 0.5 (the linear part), averaged over the batch.
    assert daa_loss(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0])).item() == pytest.approx(0.75)
    # The per-reference term: each reference's estimate y - delta_y against the true age, averaged.
    refs = torch.tensor([0, 10])
    out = DAAOutput(age=torch.tensor([5.0]), spread=torch.tensor([0.0]), deltas=torch.tensor([[-5.0, 4.5]]), references=refs)
    # estimates 5 and 5.5 against 5: errors 0 and 0.5 cost 0 and 0.5 * 0.5^2 = 0.125
    assert reference_loss(out, torch.tensor([5.0])).item() == pytest.approx(0.0625)


def test_distillation_matches_the_teachers_estimates_and_optionally_its_spread():
    refs = torch.tensor([0, 10])
    # Teacher: estimates 4 and 6 (age 5, own spread 1) but a reported spread of 3 (its members disagree).
    teacher = DAAOutput(
        age=torch.tensor([5.0]), spread=torch.tensor([3.0]), deltas=torch.tensor([[-4.0, 4.0]]), references=refs
    )
    student = DAAOutput(
        age=torch.tensor([5.0]), spread=torch.tensor([1.0]), deltas=torch.tensor([[-4.0, 4.0]]), references=refs
    )
    assert distillation_loss(student, teacher).item() == pytest.approx(0.0)
    # With the spread, the targets are 5 -+ 3 = 2 and 8: errors 2 each, costing 2 - 0.5.
    assert distillation_loss(student, teacher, spread=True).item() == pytest.approx(1.5)
    stretched = DAAOutput(
        age=torch.tensor([5.0]), spread=torch.tensor([3.0]), deltas=torch.tensor([[-2.0, 2.0]]), references=refs
    )
    assert distillation_loss(stretched, teacher, spread=True).item() == pytest.approx(0.0)


def test_flip_prediction_pools_both_crops():
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="c3ae")).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        plain, both = model(x), predict_with_flip(model, x, flip=True)
        mirrored = model(torch.flip(x, dims=[3]))
        torch.testing.assert_close(predict_with_flip(model, x, flip=False).age, plain.age)
    torch.testing.assert_close(both.age, (plain.age + mirrored.age) / 2)
    torch.testing.assert_close(both.deltas, (plain.deltas + mirrored.deltas) / 2)
    refs = plain.references.float()
    pooled = torch.cat([refs - plain.deltas, refs - mirrored.deltas], 1)
    torch.testing.assert_close(both.spread, pooled.std(1, unbiased=False))
