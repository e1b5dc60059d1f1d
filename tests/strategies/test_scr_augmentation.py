"""SCR's augmented view against its reference's kornia 0.4.1 pipeline and closed forms.

The kornia tests run where kornia 0.4.1 is installed (the dev extra); the others need
nothing but torch. ``test_a_black_image_brightens_under_the_colour_jitter`` fails on
revision 2's torchvision-style jitter (multiplicative brightness keeps black black).
"""

from __future__ import annotations

import pytest
import torch

from clbench.strategies.scr import (
    colour_jitter,
    colour_jitter_grayscale,
    contrastive_views,
    crop_resize_flip,
    hsv_to_rgb,
    resized_crop_boxes,
    rgb_to_hsv,
)

CPU = torch.device("cpu")


def test_a_black_image_brightens_under_the_colour_jitter():
    torch.manual_seed(0)
    views = colour_jitter_grayscale(torch.zeros(2000, 3, 2, 2))
    brightened = (views.amax(dim=(1, 2, 3)) > 0.01).float().mean().item()
    # kornia adds a shift in [-0.4, 0.4] (clamped at 0) to 80 % of the views: about 40 % brighten.
    assert 0.35 < brightened < 0.45


def test_crop_boxes_lie_strictly_inside_the_image_and_average_about_half_its_area():
    torch.manual_seed(0)
    x0, y0, w, h = resized_crop_boxes(20000, 32, 32, CPU).unbind(1)
    assert ((w > 0) & (w < 32) & (h > 0) & (h < 32)).all()
    assert (x0 >= 0).all() and (x0 + w <= 32).all() and (y0 >= 0).all() and (y0 + h <= 32).all()
    ratio = w.float() / h.float()
    assert ratio.min() > 0.6 and ratio.max() < 1.6  # 3/4 to 4/3 before truncating to whole pixels
    mean_area = (w * h).float().mean().item() / 1024
    assert 0.50 < mean_area < 0.535  # kornia 0.4.1: 0.516 on 5,000 boxes; clamping oversized crops gave 0.59


def test_a_crop_of_a_ramp_samples_the_box_as_kornia_maps_it():
    width = 16
    ramp = torch.arange(width, dtype=torch.float32).expand(1, 1, width, width).clone()
    boxes = torch.tensor([[3, 2, 9, 7]])
    for flip in (False, True):
        out = crop_resize_flip(ramp, boxes, torch.tensor([flip]))[0, 0, 5]
        scale = (9 - 1) / (width - 1)
        u = (2 * torch.arange(width, dtype=torch.float32) + 1) / width - 1
        u = -u if flip else u
        source = scale * u + 2 * 3 / (width - 1) - 1 + scale  # box corner pixels onto output corners, (size - 1) frame
        expected = ((source + 1) * width - 1) / 2  # sampled on an align_corners=False grid
        assert torch.allclose(out, expected, atol=1e-5)


def test_hsv_round_trip_returns_the_image():
    torch.manual_seed(0)
    pixels = torch.rand(8, 3, 5, 5)
    assert torch.allclose(hsv_to_rgb(*rgb_to_hsv(pixels)), pixels, atol=1e-6)


def test_a_full_hue_turn_and_unit_factors_leave_the_image():
    torch.manual_seed(0)
    pixels = torch.rand(4, 3, 5, 5)
    identity = torch.tensor([[0.0, 1.0, 1.0, 0.0]]).expand(4, 4)
    assert torch.allclose(colour_jitter(pixels, identity, [0, 1, 2, 3]), pixels, atol=1e-6)
    full_turn = torch.tensor([[0.0, 1.0, 1.0, 1.0]]).expand(4, 4)
    assert torch.allclose(colour_jitter(pixels, full_turn, [3, 2, 1, 0]), pixels, atol=1e-5)


def test_views_of_a_one_channel_image_are_cropped_and_flipped_only():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    views = contrastive_views(x, torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    assert views.shape == x.shape and views.min() >= 0 and views.max() <= 1


def _kornia():
    kornia = pytest.importorskip("kornia")
    if kornia.__version__ != "0.4.1":
        pytest.skip(f"the reference pins kornia 0.4.1, found {kornia.__version__}")
    return kornia


def test_crop_boxes_equal_kornia_s_for_one_seed():
    _kornia()
    from kornia.augmentation.random_generator import random_crop_generator, random_crop_size_generator

    torch.manual_seed(3)
    size = random_crop_size_generator(2000, (32, 32), torch.tensor([0.2, 1.0]), torch.tensor([3 / 4, 4 / 3]))
    source = random_crop_generator(2000, (32, 32), size["size"], resize_to=(32, 32))["src"]
    torch.manual_seed(3)
    ours = resized_crop_boxes(2000, 32, 32, CPU)
    corner, far = source[:, 0], source[:, 2]
    theirs = torch.stack([corner[:, 0], corner[:, 1], far[:, 0] - corner[:, 0] + 1, far[:, 1] - corner[:, 1] + 1], 1)
    assert torch.equal(ours, theirs.long())


def test_crop_and_flip_equal_kornia_s(monkeypatch):
    _kornia()
    from kornia.geometry.transform.crop.crop2d import crop_by_boxes

    # kornia 0.4.1 calls torch.solve, removed from torch since; this is its meaning.
    monkeypatch.setattr(torch, "solve", lambda b, a: (torch.linalg.solve(a, b), None), raising=False)
    torch.manual_seed(0)
    x = torch.rand(32, 3, 32, 32)
    boxes, flip = resized_crop_boxes(32, 32, 32, CPU), torch.rand(32) < 0.5
    x0, y0, w, h = boxes.float().unbind(1)
    corners = torch.stack([x0, y0, x0 + w - 1, y0, x0 + w - 1, y0 + h - 1, x0, y0 + h - 1], 1).view(-1, 4, 2)
    target = torch.tensor([[0.0, 0.0], [31.0, 0.0], [31.0, 31.0], [0.0, 31.0]]).expand(32, 4, 2)
    theirs = crop_by_boxes(x, corners, target, "bilinear", align_corners=False)
    theirs = torch.where(flip.view(-1, 1, 1, 1), theirs.flip(-1), theirs)
    assert torch.allclose(crop_resize_flip(x, boxes, flip), theirs, atol=1e-5)


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]])
def test_colour_jitter_equals_kornia_s(order):
    _kornia()
    from kornia.augmentation.functional import apply_color_jitter

    torch.manual_seed(sum(i * 10**k for k, i in enumerate(order)))
    pixels = torch.rand(32, 3, 8, 8)
    factors = torch.stack([torch.rand(32) * 0.8 - 0.4, *(torch.rand(32) * 0.8 + 0.6 for _ in range(2))], 1)
    factors = torch.cat([factors, torch.rand(32, 1) * 0.2 - 0.1], 1)
    params = {
        "brightness_factor": factors[:, 0] + 1,  # kornia's brightness factor is 1 + the shift
        "contrast_factor": factors[:, 1],
        "saturation_factor": factors[:, 2],
        "hue_factor": factors[:, 3],
        "order": torch.tensor(order),
    }
    assert torch.allclose(colour_jitter(pixels, factors, order), apply_color_jitter(pixels, params), atol=1e-5)
