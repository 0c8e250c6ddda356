"""Window geometry (swin_fused.geometry) against the official constructions, rebuilt here independently.

The shift mask is rebuilt the way Microsoft's code builds it (an ``img_mask`` labelled through the slices
``(0, -ws), (-ws, -s), (-s, None)``, partitioned, pairwise differences != 0 -> -100) and the relative position
index with the official meshgrid arithmetic; neither imports any index math from ``swin_fused``.
"""
import itertools

import numpy as np
import pytest
import torch

from swin_fused import geometry
from swin_fused.reference import relative_position_bias

# --------------------------------------------------------------------------------------------------------------
# Independent oracles (official constructions, generalised to (Wh, Ww) / (Sh, Sw) axis by axis)
# --------------------------------------------------------------------------------------------------------------


def official_partition(x, wh, ww):
    """``[B, H, W, C] -> [B * nW, Wh * Ww, C]`` by explicit slicing, windows in row-major order."""
    B, H, W, C = x.shape
    windows = [x[b, i:i + wh, j:j + ww].reshape(wh * ww, C)
               for b in range(B) for i in range(0, H, wh) for j in range(0, W, ww)]
    return torch.stack(windows)


def official_shift_mask(Hp, Wp, window, shift):
    """The official attn_mask on an (already padded) ``Hp x Wp`` map: ``[nW, N, N]`` of 0 / -100."""
    (wh, ww), (sh, sw) = window, shift
    img_mask = torch.zeros((1, Hp, Wp, 1))
    h_slices = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None))
    w_slices = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None))
    cnt = 0
    for h in h_slices:
        for w in w_slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mask_windows = official_partition(img_mask, wh, ww).view(-1, wh * ww)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))


def official_relative_position_index(wh, ww):
    """The official meshgrid construction of ``relative_position_index`` (``[N, N]``)."""
    coords = torch.stack(torch.meshgrid([torch.arange(wh), torch.arange(ww)], indexing="ij"))  # 2, Wh, Ww
    coords_flatten = torch.flatten(coords, 1)  # 2, N
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, N, N
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()  # N, N, 2
    relative_coords[:, :, 0] += wh - 1
    relative_coords[:, :, 1] += ww - 1
    relative_coords[:, :, 0] *= 2 * ww - 1
    return relative_coords.sum(-1)


def ceil_to(size, window):
    return int(np.ceil(size / window)) * window


# (H, W, window, shift): square and non-square windows, H != W, sizes that need padding, shift 0, maps
# exactly one window tall, shift 1 and shift window - 1.
MASK_CASES = [
    (56, 56, (7, 7), (3, 3)),
    (14, 14, (7, 7), (3, 3)),
    (28, 28, (7, 7), (0, 0)),
    (48, 48, (12, 12), (6, 6)),
    (8, 8, (4, 4), (2, 2)),
    (50, 62, (7, 7), (3, 3)),
    (25, 33, (7, 7), (3, 3)),
    (13, 17, (7, 7), (3, 3)),
    (7, 9, (7, 7), (3, 3)),
    (10, 6, (4, 4), (2, 2)),
    (12, 20, (4, 6), (2, 3)),
    (9, 11, (3, 5), (1, 2)),
    (16, 15, (8, 5), (4, 0)),
    (16, 15, (8, 5), (0, 4)),
    (11, 11, (5, 5), (4, 1)),
    (5, 5, (5, 5), (1, 1)),
    (20, 13, (6, 6), (5, 5)),
    (3, 40, (2, 7), (1, 3)),
]


@pytest.mark.parametrize("H, W, window, shift", MASK_CASES)
def test_shift_mask_matches_official_slice_construction(H, W, window, shift):
    Hp, Wp = ceil_to(H, window[0]), ceil_to(W, window[1])
    expected = official_shift_mask(Hp, Wp, window, shift)
    got = geometry.shift_mask(Hp, Wp, window, shift)
    assert got.shape == expected.shape == ((Hp // window[0]) * (Wp // window[1]), window[0] * window[1],
                                           window[0] * window[1])
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    # Only -100 and 0 appear, the mask is symmetric, and with any shift some pair is masked.
    assert set(got.unique().tolist()) <= {0.0, geometry.MASK_VALUE}
    assert torch.equal(got, got.transpose(1, 2))
    assert (got != 0).any() == (shift != (0, 0))


def test_shift_mask_dtype_and_value():
    mask = geometry.shift_mask(14, 14, (7, 7), (3, 3), dtype=torch.float16)
    assert mask.dtype == torch.float16
    assert geometry.MASK_VALUE == -100.0  # the trained-with value, not -inf
    assert mask.min().item() == -100.0


@pytest.mark.parametrize("Hp, Wp, window, shift", [
    (56, 56, (7, 7), (3, 3)), (14, 21, (7, 7), (3, 3)), (12, 20, (4, 6), (2, 3)), (9, 15, (3, 5), (1, 2)),
    (10, 10, (5, 5), (4, 4)),
])
def test_region_ids_are_the_official_img_mask_labels(Hp, Wp, window, shift):
    # With a non-zero shift in both axes the official loop labels region (row part r, col part c) as 3r + c.
    (wh, ww), (sh, sw) = window, shift
    img_mask = torch.zeros((Hp, Wp), dtype=torch.long)
    cnt = 0
    for h in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for w in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            img_mask[h, w] = cnt
            cnt += 1
    assert torch.equal(geometry.region_ids(Hp, Wp, window, shift), img_mask)


WINDOWS = [(1, 1), (2, 2), (3, 3), (4, 4), (7, 7), (12, 12), (2, 5), (5, 2), (3, 7), (8, 5), (1, 4)]


@pytest.mark.parametrize("window", WINDOWS)
def test_relative_position_index_matches_official_meshgrid(window):
    wh, ww = window
    expected = official_relative_position_index(wh, ww)
    got = geometry.relative_position_index(window)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)
    # The spec's closed form, pair by pair, and the table's row range.
    for (i, (yi, xi)), (j, (yj, xj)) in itertools.product(
        enumerate(itertools.product(range(wh), range(ww))), repeat=2
    ):
        assert got[i, j] == (yi - yj + wh - 1) * (2 * ww - 1) + (xi - xj + ww - 1)
    assert got.min() == 0 and got.max() == (2 * wh - 1) * (2 * ww - 1) - 1


def test_relative_position_index_device_and_cache_are_not_poisoned():
    # Built under a device context (as people build models on meta), the cached index must stay on the CPU.
    with torch.device("meta"):
        geometry.relative_position_index((6, 9))
    index = geometry.relative_position_index((6, 9))
    assert index.device.type == "cpu"
    assert torch.equal(index, official_relative_position_index(6, 9))
    assert geometry.relative_position_index((6, 9), device="meta").device.type == "meta"


@pytest.mark.parametrize("window, table_window", [((7, 7), (7, 7)), ((3, 3), (7, 7)), ((5, 2), (12, 6)),
                                                  ((1, 1), (7, 7)), ((4, 7), (4, 7))])
def test_relative_position_bias_reads_the_central_part_of_a_larger_table(window, table_window):
    (wh, ww), (th, tw) = window, table_window
    heads = 3
    table = torch.randn((2 * th - 1) * (2 * tw - 1), heads)
    # Same relative offsets: the small window's table is the centre of the big one, as a 2-D crop.
    crop = table.view(2 * th - 1, 2 * tw - 1, heads)[th - wh:th + wh - 1, tw - ww:tw + ww - 1].reshape(-1, heads)
    index = official_relative_position_index(wh, ww)
    expected = crop[index.view(-1)].view(wh * ww, wh * ww, heads).permute(2, 0, 1)
    assert torch.equal(relative_position_bias(table, window, table_window), expected)


@pytest.mark.parametrize("shape, window", [((2, 14, 21, 5), (7, 7)), ((1, 12, 20, 3), (4, 5)),
                                           ((3, 6, 6, 1), (6, 6)), ((1, 8, 9, 2), (1, 3)), ((2, 4, 4, 4), (1, 1))])
def test_window_partition_matches_slicing_and_reverse_inverts_it(shape, window):
    x = torch.randn(shape)
    B, H, W, C = shape
    windows = geometry.window_partition(x, window)
    assert windows.shape == (B * (H // window[0]) * (W // window[1]), window[0] * window[1], C)
    assert torch.equal(windows, official_partition(x, *window))
    assert torch.equal(geometry.window_reverse(windows, window, H, W), x)


def test_padded_size():
    for size, window in itertools.product(range(1, 40), range(1, 13)):
        assert geometry.padded_size(size, window) == ceil_to(size, window)


@pytest.mark.parametrize("resolution, window, shift, expected", [
    ((56, 56), 7, 3, ((7, 7), (3, 3))),
    ((56, 56), 7, 0, ((7, 7), (0, 0))),
    ((8, 8), 7, 3, ((7, 7), (3, 3))),  # larger than the window: unchanged (padded to 14 later)
    ((7, 7), 7, 3, ((7, 7), (0, 0))),  # not larger: no shift
    ((7, 30), 7, 3, ((7, 7), (0, 0))),  # the smaller side decides
    ((30, 4), 7, 3, ((4, 4), (0, 0))),
    ((3, 5), 7, 3, ((3, 3), (0, 0))),
    ((1, 1), 12, 6, ((1, 1), (0, 0))),
    ((12, 12), 12, 6, ((12, 12), (0, 0))),
    ((13, 12), 12, 6, ((12, 12), (0, 0))),
    ((13, 13), 12, 6, ((12, 12), (6, 6))),
    ((13, 13), (12, 12), (6, 6), ((12, 12), (6, 6))),
])
def test_effective_window_shift_is_the_official_rule(resolution, window, shift, expected):
    assert geometry.effective_window_shift(resolution, window, shift) == expected


def test_to_2tuple():
    assert geometry.to_2tuple(7) == (7, 7)
    assert geometry.to_2tuple((7, 5)) == (7, 5)
    assert geometry.to_2tuple([3, 4]) == (3, 4)
    assert geometry.to_2tuple(np.int64(5)) == (5, 5)
    assert geometry.to_2tuple(torch.Size([2, 3])) == (2, 3)
    for value in (True, None, 7.5, (7.9, 3), "77", (True, 2), object()):
        with pytest.raises(TypeError, match="window_size must be an int or a pair of ints, got"):
            geometry.to_2tuple(value, "window_size")
    for value in ((1, 2, 3), (), [4]):
        with pytest.raises(ValueError, match=r"window_size must be an int or a pair of ints, got"):
            geometry.to_2tuple(value, "window_size")
    with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):  # the message names the value
        geometry.to_2tuple((1, 2, 3), "window_size")


@pytest.mark.parametrize("value", [None, "bias"])
def test_pad_map(value):
    x = torch.randn(2, 5, 6, 4)
    fill = torch.randn(4)
    padded = geometry.pad_map(x, 7, 9, fill if value else None)
    assert padded.shape == (2, 7, 9, 4)
    assert torch.equal(padded[:, :5, :6], x)
    expected_fill = fill if value else torch.zeros(4)
    border = torch.cat([padded[:, 5:].reshape(-1, 4), padded[:, :5, 6:].reshape(-1, 4)])
    assert torch.equal(border, expected_fill.expand_as(border))
    assert geometry.pad_map(x, 5, 6) is x
