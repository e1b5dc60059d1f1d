"""SCR: supervised contrastive replay (Mai et al., CVPR-W 2021), as its reference code runs it.

Each step joins the stream mini-batch with ``memory_batch_size`` examples of a reservoir
over the stream (offered every incoming batch after its step, replayed from the first
step on), forwards the joint batch and an augmented copy of it through the encoder and a
projection head (Linear-ReLU-Linear to ``projection_dim``, L2-normalised), and trains on
the supervised contrastive loss of the two views (Khosla et al. 2020) at ``temperature``.
The classifier layer is not trained; evaluation is the nearest-class-mean classifier over
the memory's normalised features (:mod:`clbench.training.ncm`, task-IL restricts the
nearest mean to the task's classes). Reference: RaptorMai/online-continual-learning,
``agents/scr.py``, ``utils/loss.py`` (``SupConLoss``), ``models/resnet.py`` (``SupConResNet``).

The augmentation is the reference's, kornia 0.4.1 (its pinned version) as it computes it:
random resized crop (scale 0.2-1, ratio 3/4-4/3, ten tries a crop for a size strictly
inside the image), horizontal flip, colour jitter (brightness shift 0.4, contrast 0.4,
saturation 0.4, hue 0.1, in a random order, clamped after each) with probability 0.8 and
grayscale with probability 0.2, on [0, 1] pixels, as batched tensor operations
(:func:`contrastive_views`; ``tests/strategies/test_scr_augmentation.py`` holds each part
equal to kornia 0.4.1's). Where the memory is still empty (the first step) the loss is
taken on the stream batch alone (the reference skips the step). The reference feeds [0, 1]
pixels to the model where clbench feeds the benchmark's normalised ones; its README and
``general_main.py`` run temperature 0.07 without the review trick (as here), while its
``config_CVPR/agent/scr`` files set 0.1 and the review trick.

Avalanche 0.6.0's ``SCR`` (``training/supervised/supervised_contrastive_replay.py``) needs
its own ``SCRModel`` and a ``torchvision`` augmentation applied per batch; this is the same
method on clbench's backbones. Memory budget: the reservoir holds ``buffer_size``
examples; ``memory_batch_size`` (the paper's 100) replaces the run's replay batch.

Revision 3 (every run): the augmentation follows kornia 0.4.1. Revision 2 had
torchvision's colour semantics (multiplicative brightness, contrast blended to the mean
gray, saturation blended to gray, hue rotated in YIQ space, one fixed order, one clamp)
and clamped an oversized crop to the image where kornia draws again, so its crops were
milder (mean area 0.59 of the image against kornia's 0.52); a black image never
brightened (``test_scr_augmentation.py`` fails on it).
Revision 2 (runs with ``augment: true``): the memory stores the stream batch un-augmented
and replay augments every draw afresh (revision 1 stored the augmented batch and replayed
that one crop a slot for the whole run; ``tests/strategies/test_replay_augmentation.py``
fails on it). With the benchmark's ``augment: true`` the first view is the run's own crop
and flip, where the reference's first view is the raw image: SCR's protocol is the
benchmark without augmentation, its own views bringing it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clbench.data_path import resolve_rows, strategy_autocast
from clbench.datasets.base import ImageArrayDataset
from clbench.errors import ConfigError
from clbench.training.context import STRATEGIES, Recipe, StrategyContext
from clbench.training.ncm import NearestMeanReplay
from clbench.training.tensor_buffer import StreamReservoir


@dataclass(frozen=True)
class SCRArgs:
    """Arguments of SCR (the buffer size comes from the run)."""

    memory_batch_size: int = field(default=100, metadata={"help": "memory examples joined to each stream batch"})
    temperature: float = field(default=0.07, metadata={"help": "temperature of the supervised contrastive loss"})
    projection_dim: int = field(default=128, metadata={"help": "output size of the projection head"})

    def __post_init__(self) -> None:
        """Raises: ConfigError: a setting out of its range."""
        for name, value in (("memory_batch_size", self.memory_batch_size), ("projection_dim", self.projection_dim)):
            if value < 1:
                raise ConfigError(f"scr: {name} must be at least 1, got {value}")
        if not self.temperature > 0:
            raise ConfigError(f"scr: temperature must be positive, got {self.temperature}")


class ProjectedEncoder(nn.Module):
    """A backbone's features through a projection head; ``features`` and ``classifier`` stay the backbone's."""

    def __init__(self, backbone: nn.Module, projection_dim: int) -> None:
        """Wrap ``backbone`` (which has ``features`` and ``classifier``) with a Linear-ReLU-Linear head."""
        super().__init__()
        self.backbone = backbone
        classifier: nn.Linear = backbone.classifier  # type: ignore[assignment]
        width = classifier.in_features
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, projection_dim))

    @property
    def classifier(self) -> nn.Module:
        """The backbone's (untrained) classifier, whose size is the number of classes."""
        return self.backbone.classifier  # type: ignore[return-value]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's penultimate features."""
        return self.backbone.features(x)  # type: ignore[operator,no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised projections."""
        return F.normalize(self.head(self.features(x).flatten(1)), dim=1)


def supervised_contrastive_loss(views: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon over (N, V, D) normalised views: mean over anchors of -mean log p(positive | anchor)."""
    n, v = views.shape[:2]
    z = views.float().transpose(0, 1).reshape(n * v, -1)
    y = labels.repeat(v)
    similarity = z @ z.T / temperature
    self_mask = torch.eye(n * v, dtype=torch.bool, device=z.device)
    similarity = similarity - similarity.masked_fill(self_mask, float("-inf")).max(1, keepdim=True).values.detach()
    log_prob = similarity - torch.logsumexp(similarity.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    positives = (y.unsqueeze(0) == y.unsqueeze(1)) & ~self_mask
    return -((log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)).mean()


def _uniform(shape: tuple[int, ...], low: float, high: float, device: torch.device) -> torch.Tensor:
    # Drawn on the CPU generator and moved, so a run's draws do not depend on its device.
    return torch.rand(shape).to(device) * (high - low) + low


def resized_crop_boxes(n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """The boxes of kornia 0.4.1's ``RandomResizedCrop(scale=(0.2, 1), ratio=(3/4, 4/3))``: (n, 4) of x0, y0, w, h.

    Ten draws of area and log-ratio an example; the first whose truncated width and height
    both lie strictly inside the image is kept, an example without one takes the whole
    image (kornia's fallback when the ratio range holds the image's); the offsets are
    uniform integers. So no crop spans the image in either direction but the fallback.
    """
    area = _uniform((n, 10), 0.2 * height * width, 1.0 * height * width, device)
    ratio = torch.exp(_uniform((n, 10), math.log(3 / 4), math.log(4 / 3), device))
    # kornia's width is its sqrt(area / ratio) (it stacks the two the other way round).
    w, h = (area / ratio).sqrt().int(), (area * ratio).sqrt().int()
    valid = (w > 0) & (w < width) & (h > 0) & (h < height)
    rows, first = torch.arange(n, device=device), valid.int().argmax(1)
    found = valid.any(1)
    w = torch.where(found, w[rows, first], torch.full_like(w[:, 0], width))
    h = torch.where(found, h[rows, first], torch.full_like(h[:, 0], height))
    x0 = (torch.rand(n).to(device) * (width - w + 1)).long()
    y0 = (torch.rand(n).to(device) * (height - h + 1)).long()
    return torch.stack([x0, y0, w.long(), h.long()], 1)


def crop_resize_flip(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each box of ``x`` resized to full size (bilinear, zero padding) and mirrored where ``flip``.

    As kornia 0.4.1's ``crop_by_boxes``: the box's corner pixels go to the output's corner
    pixels in a pixel frame normalised by (size - 1), sampled on ``align_corners=False``
    grids; mirroring the output negates the grid's x.
    """
    _, _, height, width = x.shape
    x0, y0, w, h = boxes.to(x.dtype).unbind(1)
    scale_x, scale_y = (w - 1) / (width - 1), (h - 1) / (height - 1)
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = torch.where(flip, -scale_x, scale_x)
    theta[:, 0, 2] = 2 * x0 / (width - 1) - 1 + scale_x
    theta[:, 1, 1] = scale_y
    theta[:, 1, 2] = 2 * y0 / (height - 1) - 1 + scale_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rgb_to_hsv(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue (a fraction of the circle, [0, 1)), saturation and value of [0, 1] RGB (kornia 0.4.1's formulas)."""
    value, brightest = pixels.max(1)
    delta = value - pixels.min(1).values
    saturation = delta / (value + 1e-31)
    delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (value.unsqueeze(1) - pixels).unbind(1)
    sectors = torch.stack([bc - gc, 2 * delta + rc - bc, 4 * delta + gc - rc], 1)
    hue = (sectors.gather(1, brightest.unsqueeze(1)).squeeze(1) / delta / 6) % 1.0
    return hue, saturation, value


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_hsv` (any real hue: it wraps), (N, 3, H, W)."""
    sector = torch.floor(hue * 6) % 6
    fraction = (hue * 6) % 6 - sector
    p, q = value * (1 - saturation), value * (1 - fraction * saturation)
    t = value * (1 - (1 - fraction) * saturation)
    table = torch.stack([value, q, p, p, t, value, t, value, value, q, p, p, p, p, t, value, value, q], 1)
    index = sector.long().unsqueeze(1)
    return table.gather(1, torch.cat([index, index + 6, index + 12], 1))


def colour_jitter(pixels: torch.Tensor, factors: torch.Tensor, order: list[int]) -> torch.Tensor:
    """The colour jitter of kornia 0.4.1 on [0, 1] RGB with per-example ``factors`` (N, 4), in ``order``.

    Columns: a brightness shift (added), a contrast factor (multiplied, no blend to the
    mean), a saturation factor (HSV), a hue shift (a fraction of the circle, HSV); each
    operation clamps to [0, 1] where kornia does; 0 / 1 / 2 / 3 in ``order`` name them.
    """
    brightness, contrast = (factors[:, k].view(-1, 1, 1, 1) for k in (0, 1))  # over (N, 3, H, W)
    saturation, hue = (factors[:, k].view(-1, 1, 1) for k in (2, 3))  # over HSV planes (N, H, W)

    def saturate(p: torch.Tensor) -> torch.Tensor:
        h, s, v = rgb_to_hsv(p)
        return hsv_to_rgb(h, (s * saturation).clamp(0, 1), v)

    def shift_hue(p: torch.Tensor) -> torch.Tensor:
        h, s, v = rgb_to_hsv(p)
        return hsv_to_rgb(torch.fmod(h + hue, 1.0), s, v)

    operations = (
        lambda p: (p + brightness).clamp(0, 1),
        lambda p: (p * contrast).clamp(0, 1),
        saturate,
        shift_hue,
    )
    for index in order:
        pixels = operations[index](pixels)
    return pixels


def colour_jitter_grayscale(pixels: torch.Tensor) -> torch.Tensor:
    """As kornia 0.4.1's ``ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)`` then ``RandomGrayscale(p=0.2)`` on [0, 1] RGB.

    The factors are drawn per example (brightness shift in [-0.4, 0.4], contrast and
    saturation in [0.6, 1.4], hue shift in [-0.1, 0.1] of the circle), one order of the four
    for the batch, as kornia draws them.
    """
    n, device = pixels.shape[0], pixels.device
    factors = torch.stack(
        [
            _uniform((n,), -0.4, 0.4, device),
            _uniform((n,), 0.6, 1.4, device),
            _uniform((n,), 0.6, 1.4, device),
            _uniform((n,), -0.1, 0.1, device),
        ],
        1,
    )
    jittered = colour_jitter(pixels, factors, torch.randperm(4).tolist())
    shape = (n, 1, 1, 1)
    out = torch.where((torch.rand(n).to(device) < 0.8).view(shape), jittered, pixels)
    gray = (0.299 * out[:, 0] + 0.587 * out[:, 1] + 0.114 * out[:, 2]).unsqueeze(1).expand_as(out)
    return torch.where((torch.rand(n).to(device) < 0.2).view(shape), gray, out)


def contrastive_views(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """SCR's augmented view of normalised images ``x``: its reference's kornia pipeline on [0, 1] pixels.

    Random resized crop, horizontal flip (p = 0.5) and, on RGB images, colour jitter and
    grayscale; images of other channel counts are cropped and flipped only.
    """
    pixels = x.float() * std + mean
    n, _, height, width = x.shape
    flip = torch.rand(n).to(x.device) < 0.5
    out = crop_resize_flip(pixels, resized_crop_boxes(n, height, width, x.device), flip)
    if x.shape[1] == 3:
        out = colour_jitter_grayscale(out)
    out = (out - mean) / std
    return (
        out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else out
    )


class SCR(NearestMeanReplay):
    """SCR's step (two views of stream + memory, SupCon) and NCM evaluation (all hooks fire)."""

    def __init__(self, *, args: SCRArgs, **kwargs: Any) -> None:
        """Create the strategy (``memory``, ``memory_batch_size``: :class:`NearestMeanReplay`)."""
        super().__init__(**kwargs)
        self.args = args
        self._normalisation: tuple[torch.Tensor, torch.Tensor] | None = None

    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The benchmark's per-channel normalisation (identity for data not held as an image split)."""
        if self._normalisation is None:
            storage, _ = resolve_rows(self.experience.dataset)
            channels = int(self.mb_x.shape[1])
            mean, std = (
                (storage.mean, storage.std)
                if isinstance(storage, ImageArrayDataset)
                else ((0.0,) * channels, (1.0,) * channels)
            )
            self._normalisation = (
                torch.tensor(mean, device=self.device).view(1, -1, 1, 1),
                torch.tensor(std, device=self.device).view(1, -1, 1, 1),
            )
        return self._normalisation

    def criterion(self) -> torch.Tensor:
        """Training: SupCon of the forward's projections and those of an augmented view; evaluation: 0."""
        if not self.is_training:
            return torch.zeros((), device=self.device)
        mean, std = self._mean_std()
        with strategy_autocast(self):
            augmented = self.model(contrastive_views(self.mb_x, mean, std))
        views = torch.stack([self.mb_output.float(), augmented.float()], dim=1)
        return supervised_contrastive_loss(views, self.mb_y, self.args.temperature)


@STRATEGIES.register(
    "scr",
    args=SCRArgs,
    help="supervised contrastive replay: SupCon on two views of stream + memory, NCM evaluation",
    uses_buffer=True,
    revision=3,
)
def build_scr(ctx: StrategyContext, args: SCRArgs) -> Recipe:
    """:class:`SCR` on the backbone wrapped with a projection head, over a stream reservoir."""
    ctx.classifier_of("scr")
    model = ProjectedEncoder(copy.deepcopy(ctx.model), args.projection_dim).to(ctx.device)
    memory = StreamReservoir(ctx.buffer_size)
    return ctx.with_model(model).recipe(SCR, memory=memory, memory_batch_size=args.memory_batch_size, args=args)
