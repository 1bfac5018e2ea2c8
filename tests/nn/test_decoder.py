"""Decoders: exact shapes for every layout, `LowRank` moments and in-place materialization, and row diversity
(the low-rank decoder never copies rows; the block decoder tiles them, which is why it is only kept to compare)."""

from __future__ import annotations

import pytest
import torch

from ghn.graph import ParamInfo
from ghn.nn import DECODERS, GHN, BlockDecoder, DecoderConfig, EncoderConfig, GHNConfig, LowRankDecoder
from ghn.nn.decoder import LowRank, logical_view
from ghn.nn.features import IndexEncoding
from ghn.nn.normalize import ParamScale, normalize_params, reference_std

HIDDEN = 16
SHAPES = [
    (),  # a scalar (a learned temperature)
    (7,),  # a bias or norm scale
    (5, 3),  # a linear weight
    (6, 4, 3, 3),  # a 2-D conv
    (4, 2, 5),  # a 1-D conv
    (3, 2, 3, 3, 3),  # a 3-D conv: extra kernel dims fold into the last one
    (1, 65, 24),  # a position embedding
]


def _low_rank(rank: int = 8, num_index_features: int = 32) -> LowRankDecoder:
    return LowRankDecoder(HIDDEN, DecoderConfig(rank=rank, num_index_features=num_index_features))


def _block(channels: int = 4, kernel: int = 3) -> BlockDecoder:
    return BlockDecoder(HIDDEN, DecoderConfig(kind="block", block_channels=channels, block_kernel=kernel))


def _tensor(prediction) -> torch.Tensor:
    """(T, *shape) from a decoder's output for T embeddings."""
    return prediction.materialize() if isinstance(prediction, LowRank) else prediction


def _one(decoder, shape: tuple[int, ...], *, transposed: bool = False, embedding: torch.Tensor | None = None):
    """The single tensor a decoder makes for one embedding."""
    embedding = torch.randn(HIDDEN) if embedding is None else embedding
    return _tensor(decoder(embedding[None], shape, transposed))[0]


def _distinct_rows(rows: torch.Tensor) -> int:
    """How many rows differ bit for bit (a projection would round equal rows differently by their alignment)."""
    return torch.unique(rows.detach(), dim=0).shape[0]


def test_registry_holds_both_decoders() -> None:
    assert DECODERS.get("low_rank") is LowRankDecoder and DECODERS.get("block") is BlockDecoder
    assert isinstance(GHN(GHNConfig(decoder=DecoderConfig(kind="block"))).decoder, BlockDecoder)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("make", [_low_rank, _block], ids=["low_rank", "block"])
def test_decoder_gives_exact_shapes(make, shape: tuple[int, ...]) -> None:
    prediction = make()(torch.randn(3, HIDDEN), shape)  # a group of 3 same-shape tensors
    assert isinstance(prediction, LowRank) == (make is _low_rank and len(shape) >= 2)
    tensor = _tensor(prediction)
    assert tensor.shape == (3, *shape)
    assert torch.isfinite(tensor).all()
    if tensor[0].numel() > 1:
        assert not torch.allclose(tensor[0], tensor[1])  # different embeddings, different tensors


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("make", [_low_rank, _block], ids=["low_rank", "block"])
def test_decoding_a_group_equals_decoding_each_alone(make, shape: tuple[int, ...]) -> None:
    decoder, embeddings = make(), torch.randn(3, HIDDEN)
    together = _tensor(decoder(embeddings, shape))
    for embedding, tensor in zip(embeddings, together):
        torch.testing.assert_close(tensor, _one(decoder, shape, embedding=embedding))


@pytest.mark.parametrize("make", [_low_rank, _block], ids=["low_rank", "block"])
def test_transposed_layout_is_the_transpose_of_the_logical_tensor(make) -> None:
    """A weight stored (in, out) like HF Conv1D gets the transpose of what an (out, in) weight gets."""
    decoder, embedding = make(), torch.randn(HIDDEN)
    logical = _one(decoder, (5, 3), embedding=embedding)
    stored = _one(decoder, (3, 5), transposed=True, embedding=embedding)
    assert stored.shape == (3, 5)
    torch.testing.assert_close(stored, logical.t())


def test_logical_view() -> None:
    assert logical_view(()) == (1, 1, 1, 1)
    assert logical_view((7,)) == (7, 1, 1, 1)
    assert logical_view((5, 3)) == (5, 3, 1, 1)
    assert logical_view((4, 2, 5)) == (4, 2, 5, 1)
    assert logical_view((3, 2, 3, 4, 5)) == (3, 2, 3, 20)


def _random_low_rank(shape=(6, 4, 3), rank: int = 5, count: int = 1, **kwargs) -> LowRank:
    m, n = shape[0], torch.Size(shape[1:]).numel()
    rows = torch.randn(count, m, rank) + torch.linspace(-1, 1, count)[:, None, None]  # (T, m, R), distinct means
    return LowRank(rows, torch.randn(count, n, rank), tuple(shape), **kwargs)


def test_low_rank_moments_equal_those_of_each_tensor() -> None:
    low_rank = _random_low_rank(count=3)
    mean, var = low_rank.moments()
    tensors = low_rank.materialize().flatten(1)  # (T, numel)
    torch.testing.assert_close(mean, tensors.mean(1))
    torch.testing.assert_close(var, tensors.var(1, unbiased=False))


def test_materialize_applies_scale_and_shift_per_tensor() -> None:
    plain = _random_low_rank(count=2)
    scale, shift = torch.tensor([0.5, 3.0]), torch.tensor([-2.0, 1.0])
    shifted = LowRank(plain.rows, plain.cols, plain.shape, scale=scale, shift=shift)
    expected = plain.materialize() * scale[:, None, None, None] + shift[:, None, None, None]
    torch.testing.assert_close(shifted.materialize(), expected)
    torch.testing.assert_close(shifted[1].materialize()[0], expected[1])  # one tensor of the group, still factored


def test_materialize_writes_into_out_in_place() -> None:
    low_rank = _random_low_rank(scale=torch.tensor([3.0]), shift=torch.tensor([1.0]))
    out = torch.full(low_rank.shape, float("nan"))
    result = low_rank.materialize(out=out)
    assert result.data_ptr() == out.data_ptr() and result.shape == low_rank.shape
    torch.testing.assert_close(out, low_rank.materialize()[0])


def test_materialize_into_out_needs_a_single_tensor() -> None:
    with pytest.raises(ValueError, match="holds 2"):
        _random_low_rank(count=2).materialize(out=torch.empty(6, 4, 3))


@pytest.mark.parametrize(
    "make_out",
    [
        lambda shape: torch.empty(shape).to(memory_format=torch.channels_last),
        lambda shape: torch.empty(shape, dtype=torch.float64),
    ],
    ids=["channels_last", "float64"],
)
def test_materialize_into_out_of_another_layout_or_dtype(make_out) -> None:
    """Regression: an `out` that is not contiguous float32 (a channels_last conv weight) used to raise in `view`."""
    low_rank = _random_low_rank(shape=(6, 4, 3, 3))
    out = make_out(low_rank.shape)
    result = low_rank.materialize(out=out)
    assert result is out
    torch.testing.assert_close(out, low_rank.materialize()[0].to(out.dtype))


def test_normalized_low_rank_has_the_reference_std_without_materializing() -> None:
    info = ParamInfo("fc.weight", (300, 40), role="weight", layout="out_in")
    scale = ParamScale(gain=2**0.5)
    raw = _low_rank()(torch.randn(1, HIDDEN), info.shape)
    normalized = normalize_params(raw, [info], [scale])
    assert isinstance(normalized, LowRank)
    tensor = normalized.materialize()[0]
    torch.testing.assert_close(tensor.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(tensor.std(unbiased=False), torch.tensor(reference_std(info, scale)))


@pytest.mark.parametrize("shape", [(5000, 64), (50257, 16)], ids=["5000x64", "gpt2_vocab_x16"])
def test_low_rank_rows_of_a_wide_tensor_are_all_distinct(shape: tuple[int, int]) -> None:
    with torch.no_grad():
        tensor = _one(_low_rank(rank=16, num_index_features=64), shape)
    assert _distinct_rows(tensor) == shape[0]
    # Not merely different in the last bit: neighbouring rows (the most alike codes) differ clearly.
    gaps = (tensor[1:] - tensor[:-1]).norm(dim=1) / tensor.norm(dim=1).mean()
    assert gaps.min() > 0.01


def test_low_rank_columns_of_a_wide_tensor_are_all_distinct() -> None:
    with torch.no_grad():
        tensor = _one(_low_rank(), (16, 4096))
    assert _distinct_rows(tensor.t()) == 4096


def test_block_decoder_tiles_rows_and_columns_with_period_block_channels() -> None:
    channels = 4
    tensor = _one(_block(channels), (22, 10))
    torch.testing.assert_close(tensor[channels:], tensor[:-channels], rtol=0, atol=0)  # rows repeat
    torch.testing.assert_close(tensor[:, channels:], tensor[:, :-channels], rtol=0, atol=0)  # columns repeat
    assert _distinct_rows(tensor) == channels  # only `channels` distinct rows
    # the low-rank decoder copies nothing at the same shape
    assert _distinct_rows(_one(_low_rank(), (22, 10))) == 22


def test_block_decoder_crops_small_kernels_and_tiles_large_ones() -> None:
    decoder, embedding = _block(channels=4, kernel=3), torch.randn(HIDDEN)
    full = _one(decoder, (4, 4, 3, 3), embedding=embedding)
    torch.testing.assert_close(_one(decoder, (4, 4, 1, 1), embedding=embedding)[..., 0, 0], full[..., 1, 1])  # center
    large = _one(decoder, (4, 4, 7, 7), embedding=embedding)
    torch.testing.assert_close(large[..., 3:, :], large[..., :-3, :])  # tiled with period 3
    torch.testing.assert_close(large[..., :3, :3], full)


def test_block_decoder_tiles_vectors() -> None:
    vector = _one(_block(channels=4), (10,))
    torch.testing.assert_close(vector[4:], vector[:-4])


@pytest.mark.parametrize("num_index_features", [8, 16, 24, 40])
def test_every_valid_index_width_predicts_every_shape(num_index_features: int) -> None:
    """Regression: widths that are multiples of 4 but not of 8 (12, 20, ...) made IndexEncoding crash; the config now
    asks for multiples of 8, and every one of those works for linear, conv and 3-D conv shapes."""
    decoder = _low_rank(rank=4, num_index_features=num_index_features)
    for shape in SHAPES:
        assert _one(decoder, shape).shape == shape
    ghn = GHN(
        GHNConfig(
            encoder=EncoderConfig(hidden_dim=8, num_heads=2, num_layers=1),
            decoder=DecoderConfig(rank=4, num_index_features=num_index_features),
        )
    )
    assert ghn.decoder.index.raw(5, (3, 3)).shape == (45, num_index_features)


def test_index_encoding_is_seeded_and_the_same_on_meta() -> None:
    first, second = IndexEncoding(32, 16), IndexEncoding(32, 16)
    torch.testing.assert_close(first.omega, second.omega, rtol=0, atol=0)
    with torch.device("meta"):
        on_meta = IndexEncoding(32, 16)
    assert on_meta.omega.is_meta and on_meta.phase.is_meta


@pytest.mark.gpu
def test_index_encoding_built_under_a_cuda_device_context() -> None:
    """Regression: the fixed codes were drawn with a CPU generator on the default device, which fails on CUDA."""
    with torch.device("cuda"):
        on_gpu = IndexEncoding(32, 16)
    assert on_gpu.omega.is_cuda and on_gpu.mlp[0].weight.is_cuda
    torch.testing.assert_close(on_gpu.omega.cpu(), IndexEncoding(32, 16).omega, rtol=0, atol=0)


@pytest.mark.parametrize("m", [200, 64, 10], ids=["tall", "twice-rank", "wide"])
def test_orthogonalize_flattens_the_spectrum_and_keeps_the_column_space(m: int) -> None:
    from ghn.nn.decoder import orthogonalize

    generator = torch.Generator().manual_seed(0)
    skew = torch.logspace(0, -1, 32)  # a decade of spread across the ranks, as trained factors drift to
    factor = (torch.randn(2, m, 32, generator=generator) * skew)  # (T, m, R)
    (out,) = orthogonalize([factor])
    values = torch.linalg.svdvals(out.double())
    assert values.min() > 0.5 and values.max() < 1.3  # from a >10x spread to within a factor ~2
    # same column space: projecting the output onto the input's columns loses nothing
    basis, _ = torch.linalg.qr(factor.double())
    assert torch.allclose(basis @ (basis.transpose(1, 2) @ out.double()), out.double(), atol=1e-4)


def test_untrained_low_rank_weights_are_not_near_rank_one() -> None:
    """The collapse this decoder once had: output units of a predicted layer near-copies of each other."""
    torch.manual_seed(0)
    with torch.no_grad():
        tensor = _one(_low_rank(rank=32, num_index_features=64), (64, 128))
    values = torch.linalg.svdvals(tensor.double())
    stable_rank = float(values.pow(2).sum() / values[0].pow(2))
    assert stable_rank > 10  # of at most 32; nearly rank one before orthogonalization
    units = torch.nn.functional.normalize(tensor, dim=1)
    cos = (units @ units.t()).abs()
    assert float((cos.sum() - 64) / (64 * 63)) < 0.3
