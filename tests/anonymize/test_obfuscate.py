"""Obfuscation modes on tensors: what changes, what does not, and what can survive."""

from __future__ import annotations

import pytest
import torch

from secure_data.anonymize.obfuscate import Region, Style, blur_grid_size, obfuscate_batch, padded_region


def textured(h=120, w=160, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def checkerboard(h, w, mean=128, amp=100) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    board = ((ys // 2 + xs // 2) % 2) * 2 - 1
    return (mean + amp * board).clamp(0, 255).to(torch.uint8).expand(3, h, w).clone()


def hf_energy(x: torch.Tensor) -> float:
    """Mean absolute horizontal + vertical difference: high-frequency detail."""
    x = x.float()
    return float((x[:, 1:, :] - x[:, :-1, :]).abs().mean() + (x[:, :, 1:] - x[:, :, :-1]).abs().mean())


def test_padded_region_grows_rounds_out_and_clips():
    assert padded_region((10.2, 20.7, 30.1, 40.0), 0.0, 100, 100) == Region(10, 20, 31, 40)
    assert padded_region((10, 20, 30, 40), 0.5, 100, 100) == Region(0, 10, 40, 50)
    assert padded_region((90, 90, 120, 130), 0.1, 100, 100) == Region(87, 86, 100, 100)
    assert padded_region((50, 50, 50, 60), 0.0, 100, 100) is None  # empty box


@pytest.mark.parametrize("mode", ["blur", "pixelate", "fill"])
@pytest.mark.parametrize("shape", ["rectangle", "ellipse"])
def test_only_the_region_changes_and_detail_is_destroyed(mode, shape):
    img = textured()
    before = img.clone()
    r = Region(40, 30, 120, 100)
    obfuscate_batch([img], [[r]], Style(mode=mode, shape=shape))
    outside = torch.ones(img.shape[1:], dtype=torch.bool)
    outside[r.y1:r.y2, r.x1:r.x2] = False
    assert torch.equal(img[:, outside], before[:, outside])
    inside, orig = img[:, r.y1:r.y2, r.x1:r.x2], before[:, r.y1:r.y2, r.x1:r.x2]
    if shape == "ellipse":  # the corners of the box are outside the inscribed ellipse: untouched
        assert torch.equal(inside[:, :3, :3], orig[:, :3, :3])
        centre = (slice(None), slice(25, 45), slice(30, 50))
        assert hf_energy(inside[centre]) < 0.1 * hf_energy(orig[centre])
    else:
        assert hf_energy(inside) < 0.1 * hf_energy(orig)


def test_fill_is_flat_and_uses_mean_or_given_colour():
    img = textured()
    r = Region(0, 0, 50, 40)
    mean = img[:, :40, :50].float().mean((1, 2)).round()
    obfuscate_batch([img], [[r]], Style(mode="fill"))
    assert torch.equal(img[:, :40, :50].float(), mean[:, None, None].expand(3, 40, 50))
    obfuscate_batch([img], [[r]], Style(mode="fill", fill_color=(1, 2, 3)))
    assert img[:, :40, :50].reshape(3, -1).unique(dim=1).tolist() == [[1], [2], [3]]


def test_pixelate_has_at_most_cells_squared_colours_and_a_minimum_block():
    img = textured(200, 200)
    obfuscate_batch([img], [[Region(0, 0, 160, 160)]], Style(mode="pixelate", pixel_cells=8))
    assert img[:, :160, :160].reshape(3, -1).unique(dim=1).shape[1] <= 64
    small = textured(40, 40, seed=1)
    obfuscate_batch([small], [[Region(0, 0, 12, 12)]], Style(mode="pixelate", pixel_cells=8, min_block_px=4))
    assert small[:, :12, :12].reshape(3, -1).unique(dim=1).shape[1] <= 9  # 12 px / 4 px blocks = 3 x 3


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_output_depends_only_on_the_coarse_grid(mode):
    """Two regions with equal coarse averages but different detail give the same result: the detail is gone."""
    g = blur_grid_size(Style().blur_sigma) if mode == "blur" else 8
    size = g * 8
    flat = torch.full((3, size, size), 128, dtype=torch.uint8)
    board = checkerboard(size, size)  # 2 px checks: every grid cell averages to 128 too
    r = Region(0, 0, size, size)
    obfuscate_batch([flat, board], [[r], [r]], Style(mode=mode))
    assert (flat.int() - board.int()).abs().max() <= 1
    assert hf_energy(board) < 0.5


def test_blur_is_stronger_with_larger_sigma_and_batches_many_regions():
    base = textured(200, 300, seed=3)
    a, b = base.clone(), base.clone()
    regions = [Region(10, 10, 90, 90), Region(100, 20, 280, 80), Region(40, 120, 70, 190)]
    obfuscate_batch([a, b], [regions, regions[:1]], Style(mode="blur", blur_sigma=0.1))
    strong = base.clone()
    obfuscate_batch([strong], [regions], Style(mode="blur", blur_sigma=0.4))
    for r in regions:
        sl = (slice(None), slice(r.y1, r.y2), slice(r.x1, r.x2))
        assert hf_energy(strong[sl]) <= hf_energy(a[sl]) + 1e-6
    assert torch.equal(a[:, 10:90, 10:90], b[:, 10:90, 10:90])  # same region, same result, whatever the batch
    assert torch.equal(b[:, 120:190, 40:70], base[:, 120:190, 40:70])
