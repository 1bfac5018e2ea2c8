"""`ghn.nn.spectrum`: a low-rank prediction put at the spectrum of the model's own init keeps the prediction's
directions, takes the own init's scale and fills the rest with the own init; it is differentiable in the
prediction, and the in-place form used by `ghn.predict` gives the same values."""

from __future__ import annotations

import pytest
import torch

from ghn.nn import spectrum
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


def _own_inits(m: int, n: int) -> dict[str, torch.Tensor]:
    """Inits of one (m, n) matrix: three i.i.d. ones (as default inits are) and three that are not."""
    generator = torch.Generator().manual_seed(0)
    gaussian = torch.randn(m, n, generator=generator) * 0.02
    return {
        "gaussian": gaussian,
        "uniform": (torch.rand(m, n, generator=generator) * 2 - 1) * 0.05,
        "truncated normal": torch.nn.init.trunc_normal_(torch.empty(m, n), std=0.02, generator=generator),
        "orthogonal": torch.nn.init.orthogonal_(torch.empty(m, n), generator=generator),
        "rank-8 spike": gaussian
        + 0.005 * torch.randn(m, 8, generator=generator) @ torch.randn(8, n, generator=generator),
        "nonzero mean": gaussian + 0.01,
    }


@pytest.mark.parametrize("shape", [(300, 600), (600, 300), (40, 70)])
def test_own_top_rms_matches_the_exact_svd_for_iid_and_structured_inits(shape) -> None:
    """Above 256 rows and columns an i.i.d.-looking init takes the Marchenko-Pastur shortcut; whatever the init,
    the value stays within 1% of the exact singular values (the structured ones fall back to an SVD)."""
    for name, own in _own_inits(*shape).items():
        exact = torch.linalg.svdvals(own)[:16].pow(2).mean().sqrt()
        torch.testing.assert_close(own_top_rms(own[None], 16)[0], exact, atol=0, rtol=1e-2, msg=name)


def test_the_iid_probe_tells_default_inits_from_structured_ones() -> None:
    own = _own_inits(300, 600)
    stacked = torch.stack(list(own.values()))
    rms = torch.linalg.vector_norm(stacked, dim=(1, 2)) / (300 * 600) ** 0.5
    looks_iid = spectrum._looks_iid(stacked, 16, rms * spectrum._unit_gaussian_top_rms(300, 600, 16))
    assert dict(zip(own, looks_iid.tolist(), strict=True)) == {
        "gaussian": True, "uniform": True, "truncated normal": True,
        "orthogonal": False, "rank-8 spike": False, "nonzero mean": False,
    }  # fmt: skip


def test_own_top_rms_is_deterministic_and_leaves_the_global_random_state_alone() -> None:
    own = torch.stack(list(_own_inits(300, 1100).values()))  # the shortcut and the exact SVD
    wide = torch.stack([torch.randn(1100, 1200) * 0.02, torch.nn.init.orthogonal_(torch.empty(1100, 1200))])
    state = torch.random.get_rng_state()
    first, first_wide = own_top_rms(own, 16), own_top_rms(wide, 16)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(first, own_top_rms(own, 16)) and torch.equal(first_wide, own_top_rms(wide, 16))
    exact_wide = torch.linalg.svdvals(wide)[:, :16].pow(2).mean(1).sqrt()  # above 1024: shortcut, randomized SVD
    torch.testing.assert_close(first_wide, exact_wide, atol=0, rtol=2e-2)


@pytest.mark.parametrize(("free", "in_place"), [(1.0, 1), (0.5, 0)])
def test_a_free_spectrum_mixes_the_flat_value_with_the_relative_strengths(free: float, in_place: int) -> None:
    """`free` f (`GHNConfig.free_spectrum_roles`, `free_spectrum_share`): each of W's directions at (1 - f) s + f
    times its relative singular value scaled so their energy is the flat top's (r * s^2), so none falls below
    (1 - f) s (at f = 1 the relative strengths alone); the own init fills the rest as before, in place alike."""
    prediction = _prediction(40, 48, rank=6)
    own = torch.randn(2, 40, 48) * 0.05
    mixed, flat = at_own_spectrum(prediction, own, free=free), at_own_spectrum(prediction, own)
    w = prediction.rows @ prediction.cols.transpose(1, 2)
    for t in range(2):
        u, values, vh = torch.linalg.svd(w[t], full_matrices=False)
        s = torch.linalg.svdvals(own[t])[:6].pow(2).mean().sqrt()
        expected = (1 - free) * s + free * values[:6] * (s * 6**0.5 / values[:6].norm())
        mixed_values = torch.linalg.svdvals(mixed[t] - flat[t] + s * u[:, :6] @ vh[:6])[:6]
        torch.testing.assert_close(mixed_values, expected, atol=2e-4, rtol=1e-3)
        assert float(mixed_values.min()) >= (1 - free) * float(s) - 1e-4
    target = own[in_place].clone()
    at_own_spectrum_(target, prediction[in_place], free=free)
    torch.testing.assert_close(target, mixed[in_place], atol=1e-6, rtol=1e-5)


def test_a_table_held_as_one_row_is_put_at_the_spectrum_of_its_n_by_d_matrix() -> None:
    """A (1, N, d) position table predicted of rank 3 (its N rows near-copies): with `tables`, W' = s P + (I - PP^T)
    A (I - P^TP) on the N x d view, so the GHN's 3 directions are at the RMS of A's top 3 singular values, A fills
    the rest and the rows are as far apart as A's; without, it stays one vector of the GHN's. The in-place form
    used by `ghn.predict` gives the same, and gradients reach the factors."""
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(2, 17, 3, generator=generator) @ torch.randn(2, 3, 64, generator=generator)  # rank 3
    rows = torch.ones(2, 1, 1, requires_grad=True)
    cols = table.reshape(2, 17 * 64, 1).requires_grad_()
    prediction = LowRank(rows, cols, (1, 17, 64))
    assert spectrum.is_table(prediction) and not spectrum.is_table(LowRank(rows, cols[:, :64], (1, 1, 64)))
    own = torch.randn(2, 1, 17, 64, generator=generator) * 0.02

    def row_cos(x: torch.Tensor) -> float:
        unit = torch.nn.functional.normalize(x.reshape(17, 64), dim=1)
        return float(((unit @ unit.T).abs().sum() - 17) / (17 * 16))

    out = at_own_spectrum(prediction, own, tables=True)
    assert out.shape == (2, 1, 17, 64)
    for t in range(2):
        a, w = own[t].reshape(17, 64), out[t].detach().reshape(17, 64)
        values, own_values = torch.linalg.svdvals(w), torch.linalg.svdvals(a)
        assert float(values[-1]) > 0.5 * float(own_values[-1])  # full rank: A fills what W leaves out
        u, _, vh = torch.linalg.svd(table[t], full_matrices=False)  # the GHN's directions, at A's top-3 RMS
        s = own_values[:3].pow(2).mean().sqrt()
        torch.testing.assert_close(w @ vh[:3].T, s * u[:, :3], atol=2e-4, rtol=0)
        torch.testing.assert_close(w.T @ u[:, :3], s * vh[:3].T, atol=2e-4, rtol=0)
        assert row_cos(w) < 1.5 * row_cos(a) and row_cos(table[t]) > 3 * row_cos(a)
    assert row_cos(at_own_spectrum(prediction, own)[0].detach()) > 3 * row_cos(own[0])  # off: near-copies stay
    target = own[1].clone()
    at_own_spectrum_(target, prediction[1], tables=True)
    torch.testing.assert_close(target, out[1].detach(), atol=1e-6, rtol=1e-5)
    (out * torch.randn_like(out)).sum().backward()
    assert cols.grad is not None and torch.isfinite(cols.grad).all() and cols.grad.abs().sum() > 0
