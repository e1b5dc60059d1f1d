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

The augmentation is the reference's (kornia): random resized crop (scale 0.2-1, ratio
3/4-4/3), horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8,
grayscale with probability 0.2, here as batched tensor operations (:func:`contrastive_views`;
the hue shift is a rotation in YIQ space). Where the memory is still empty (the first
step) the loss is taken on the stream batch alone (the reference skips the step).

Avalanche 0.6.0's ``SCR`` (``training/supervised/supervised_contrastive_replay.py``) needs
its own ``SCRModel`` and a ``torchvision`` augmentation applied per batch; this is the same
method on clbench's backbones. Memory budget: the reservoir holds ``buffer_size``
examples; ``memory_batch_size`` (the paper's 100) replaces the run's replay batch.

Revision 2 (runs with ``augment: true`` only; the others keep revision 1 and their ids): the
memory stores the stream batch un-augmented and replay augments every draw afresh, as its
reference does (the raw batch is stored; each replayed one is augmented). Revision 1 stored
the augmented batch and replayed that one crop a slot for the whole run
(``tests/strategies/test_replay_augmentation.py`` fails on it).
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
from clbench.training.context import STRATEGIES, AugmentedRunsRevision, Recipe, StrategyContext
from clbench.training.ncm import NearestMeanReplay
from clbench.training.tensor_buffer import StreamReservoir

YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


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


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n).to(device) * (high - low) + low


def resized_crop_flip(x: torch.Tensor) -> torch.Tensor:
    """Random resized crop (scale 0.2-1, ratio 3/4-4/3) back to full size and a horizontal flip, per example."""
    n, device = x.shape[0], x.device
    area = _uniform(n, 0.2, 1.0, device)
    ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), device))
    width, height = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    flip = torch.where(torch.rand(n).to(device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 1, 1] = width * flip, height
    theta[:, 0, 2] = (torch.rand(n).to(device) * 2 - 1) * (1 - width)
    theta[:, 1, 2] = (torch.rand(n).to(device) * 2 - 1) * (1 - height)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter_grayscale(pixels: torch.Tensor) -> torch.Tensor:
    """Jitter brightness/contrast/saturation 0.4, hue 0.1 (p = 0.8), then grayscale (p = 0.2), on [0, 1] RGB."""
    n, device = pixels.shape[0], pixels.device
    shape = (n, 1, 1, 1)
    yiq = YIQ.to(device)
    gray = torch.einsum("c,nchw->nhw", yiq[0], pixels).unsqueeze(1)
    jittered = pixels * _uniform(n, 0.6, 1.4, device).view(shape)
    mean_gray = torch.einsum("c,nchw->n", yiq[0], jittered).view(shape) / (pixels.shape[2] * pixels.shape[3])
    jittered = (jittered - mean_gray) * _uniform(n, 0.6, 1.4, device).view(shape) + mean_gray
    gray = torch.einsum("c,nchw->nhw", yiq[0], jittered).unsqueeze(1)
    jittered = gray + (jittered - gray) * _uniform(n, 0.6, 1.4, device).view(shape)
    angle = _uniform(n, -0.1, 0.1, device) * 2 * math.pi
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(n, 3, 3, device=device)
    rotation[:, 0, 0], rotation[:, 1, 1], rotation[:, 2, 2] = 1.0, cos, cos
    rotation[:, 1, 2], rotation[:, 2, 1] = -sin, sin
    hue = torch.linalg.inv(yiq) @ rotation @ yiq
    jittered = torch.einsum("nij,njhw->nihw", hue, jittered).clamp(0, 1)
    apply = (torch.rand(n).to(device) < 0.8).view(shape)
    out = torch.where(apply, jittered, pixels)
    gray = torch.einsum("c,nchw->nhw", yiq[0], out).unsqueeze(1).expand_as(out)
    return torch.where((torch.rand(n).to(device) < 0.2).view(shape), gray, out)


def contrastive_views(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """SCR's augmented view of normalised images ``x`` (colour operations on RGB images only)."""
    out = resized_crop_flip(x.float())
    if x.shape[1] == 3:
        out = (colour_jitter_grayscale(out * std + mean) - mean) / std
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
    revision=AugmentedRunsRevision(2),
)
def build_scr(ctx: StrategyContext, args: SCRArgs) -> Recipe:
    """:class:`SCR` on the backbone wrapped with a projection head, over a stream reservoir."""
    ctx.classifier_of("scr")
    model = ProjectedEncoder(copy.deepcopy(ctx.model), args.projection_dim).to(ctx.device)
    memory = StreamReservoir(ctx.buffer_size)
    return ctx.with_model(model).recipe(SCR, memory=memory, memory_batch_size=args.memory_batch_size, args=args)
