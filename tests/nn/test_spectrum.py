"""`ghn.nn.spectrum`: a low-rank prediction put at the spectrum of the model's own init keeps the prediction's
directions, takes the own init's scale and fills the rest with the own init; it is differentiable in the
prediction, and the in-place form used by `ghn.predict` gives the same values."""

from __future__ import annotations

import pytest
import torch

from ghn.nn.decoder import LowRank, orthogonalize
from ghn.nn.spectrum import at_own_spectrum, at_own_spectrum_, gaussian_top_rms, own_top_rms, polar


def _prediction(m: int, n: int, rank: int = 6, tensors: int = 2, seed: int = 0) -> LowRank:
    """Decoder-like factors: orthogonalized, with a spread spectrum, a scale and a shift."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = orthogonalize([torch.randn(tensors, m, rank, generator=generator),
                                torch.randn(tensors, n, rank, generator=generator)])  # fmt: skip
    spectrum = torch.linspace(3.0, 0.2, rank)
    return LowRank(rows * spectrum, cols, (m, n), scale=torch.full((tensors,), 0.3), shift=torch.full((tensors,), 0.01))


def test_polar_sets_every_singular_value_to_one_and_keeps_the_singular_vectors() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 20, 7) @ torch.diag(torch.logspace(-0.5, 0.5, 7))  # condition numbers up to ~20
    p = polar(x)
    torch.testing.assert_close(torch.linalg.svdvals(p), torch.ones(3, 7), atol=1e-4, rtol=0)
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    torch.testing.assert_close(p, u @ vh, atol=1e-4, rtol=0)
    torch.testing.assert_close(polar(x.transpose(1, 2)), p.transpose(1, 2), atol=1e-5, rtol=0)  # wide as tall
    # a direction far weaker than the others (rounding noise of the factors) is lifted less, never above 1
    weak = torch.linalg.svdvals(polar(torch.randn(3, 20, 7) @ torch.diag(torch.logspace(-3, 0, 7))))
    assert float(weak.max()) <= 1.0 + 1e-4 and float(weak.min()) < 0.9


def test_prediction_keeps_its_directions_at_the_own_inits_top_scale_and_the_own_init_fills_the_rest() -> None:
    """W' = s U V^T + (I - UU^T) A (I - VV^T): the prediction's singular pairs stay singular pairs of W', all with
    value s (the RMS of A's top singular values); off those directions W' is A, projected."""
    prediction = _prediction(40, 48, rank=6)
    own = torch.randn(2, 40, 48) * 0.05
    out = at_own_spectrum(prediction, own)
    w = prediction.rows @ prediction.cols.transpose(1, 2)  # scale and shift do not change the directions
    for t in range(2):
        u, _, vh = torch.linalg.svd(w[t], full_matrices=False)
        u, vh = u[:, :6], vh[:6]
        s = torch.linalg.svdvals(own[t])[:6].pow(2).mean().sqrt()
        torch.testing.assert_close(out[t] @ vh.T, s * u, atol=2e-4, rtol=0)
        torch.testing.assert_close(out[t].T @ u, s * vh.T, atol=2e-4, rtol=0)
        rest = own[t] - u @ (u.T @ own[t])
        rest = rest - (rest @ vh.T) @ vh
        off = out[t] - u @ (u.T @ out[t])
        torch.testing.assert_close(off - (off @ vh.T) @ vh, rest, atol=1e-5, rtol=0)
        assert 0.9 < float(out[t].std() / own[t].std()) < 1.2  # the own init's scale, whatever the prediction's


@pytest.mark.parametrize("shape", [(4, 48), (48, 4), (4, 3, 3, 3), (1, 1, 16)])
def test_a_prediction_spanning_a_whole_side_gets_a_flat_spectrum_at_the_own_inits_norm(shape) -> None:
    """When rows or columns are no more than the rank, W spans that side whole: W' = s * polar(W), nothing of A is
    left, and its Frobenius norm is A's."""
    m, n = shape[0], int(torch.tensor(shape[1:]).prod())
    prediction = LowRank(*orthogonalize([torch.randn(1, m, 8), torch.randn(1, n, 8)]), shape)
    own = torch.randn(1, *shape) * 0.1
    out = at_own_spectrum(prediction, own)
    assert out.shape == (1, *shape)
    if m == 1:  # one row: its one direction is centered, as normalization centers it
        assert abs(float(out.mean())) < 1e-6
    values = torch.linalg.svdvals(out.reshape(m, n))
    torch.testing.assert_close(values, values.max().expand_as(values), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(out.norm(), own.norm(), atol=0, rtol=2e-3)


def test_gradients_reach_the_prediction_and_never_the_own_init() -> None:
    prediction = _prediction(30, 20, rank=6, tensors=1)
    rows = prediction.rows.detach().requires_grad_()
    cols = prediction.cols.detach().requires_grad_()
    own = (torch.randn(1, 30, 20) * 0.1).requires_grad_()
    target = torch.randn(1, 30, 20)
    (at_own_spectrum(LowRank(rows, cols, (30, 20)), own) * target).sum().backward()
    for grad in (rows.grad, cols.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert own.grad is None


def test_in_place_form_equals_the_batched_one_and_draws_on_request() -> None:
    prediction = _prediction(64, 36, rank=6)
    own = torch.randn(2, 64, 36) * 0.05
    expected = at_own_spectrum(prediction, own)
    for t in range(2):
        target = own[t].clone()
        at_own_spectrum_(target, prediction[t])
        torch.testing.assert_close(target, expected[t], atol=1e-6, rtol=1e-5)
    conv = torch.empty(64, 4, 3, 3).to(torch.bfloat16)  # another dtype: computed in float32, written back
    torch.manual_seed(0)
    at_own_spectrum_(conv, LowRank(*orthogonalize([torch.randn(1, 64, 6), torch.randn(1, 36, 6)]), (64, 4, 3, 3)),
                     own_std=0.05)  # fmt: skip
    assert conv.dtype == torch.bfloat16 and torch.isfinite(conv).all()
    assert 0.9 < float(conv.float().std() / 0.05) < 1.2


def test_gaussian_top_rms_is_what_a_fresh_draw_gives() -> None:
    torch.manual_seed(0)
    for m, n, rank in [(64, 576, 32), (256, 96, 32), (96, 96, 32), (10, 64, 32)]:
        drawn = float(own_top_rms(torch.randn(1, m, n) * 0.02, rank)[0])
        assert abs(gaussian_top_rms(m, n, rank, 0.02) / drawn - 1) < 0.05, (m, n)  # a draw of 640 entries: +-3%


def test_a_free_spectrum_keeps_the_predictions_relative_strengths_at_the_same_energy() -> None:
    """flat=False (`GHNConfig.free_spectrum_roles`): W's directions keep their relative singular values, scaled so
    their energy is the flat top's (r * s^2); the own init fills the rest as before."""
    prediction = _prediction(40, 48, rank=6)
    own = torch.randn(2, 40, 48) * 0.05
    free, flat = at_own_spectrum(prediction, own, flat=False), at_own_spectrum(prediction, own)
    w = prediction.rows @ prediction.cols.transpose(1, 2)
    for t in range(2):
        u, values, vh = torch.linalg.svd(w[t], full_matrices=False)
        s = torch.linalg.svdvals(own[t])[:6].pow(2).mean().sqrt()
        expected = values[:6] * (s * 6**0.5 / values[:6].norm())
        free_values = torch.linalg.svdvals(free[t] - flat[t] + s * u[:, :6] @ vh[:6])[:6]
        torch.testing.assert_close(free_values, expected, atol=2e-4, rtol=1e-3)
    target = own[1].clone()
    at_own_spectrum_(target, prediction[1], flat=False)
    torch.testing.assert_close(target, free[1], atol=1e-6, rtol=1e-5)
