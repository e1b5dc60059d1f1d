"""Networks: the CIFAR ResNet-18 and a small MLP, registered in :data:`BACKBONES`.

Every backbone maps a batch of images to logits over all classes of the benchmark (a
single head; task-IL accuracy masks the logits at evaluation time) and exposes
``features(x)`` (penultimate activations) for strategies that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clbench.registry import Registry

BackboneFactory = Callable[[Any, tuple[int, int, int], int], nn.Module]

BACKBONES: Registry[BackboneFactory] = Registry("backbone", "clbench.backbones", builtin_modules=("clbench.backbones",))


class CosineClassifier(nn.Module):
    """Bias-free cosine-similarity head: ``scale`` x cos(features, class weight) (Chen et al. 2019's distLinear).

    The head of ER-ACE's reference code (pclucas14/AML ``model.py``, scale 10, 1e-5 in the norms).
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 10.0) -> None:
        """A head from ``in_features`` to ``out_features`` scores."""
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, scale
        self.weight = nn.Parameter(nn.Linear(in_features, out_features, bias=False).weight.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities of ``x``'s rows with each class weight."""
        x_unit = x / (x.norm(dim=1, keepdim=True) + 1e-5)
        w_unit = self.weight / (self.weight.norm(dim=1, keepdim=True) + 1e-5)
        scores: torch.Tensor = self.scale * x_unit @ w_unit.T
        return scores


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        """Create a block mapping ``in_planes`` to ``planes`` channels."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem, no max-pool, width ``nf`` (64 full, 20 reduced)."""

    def __init__(self, in_channels: int, n_classes: int, nf: int = 64) -> None:
        """Create the network."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, nf, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        layers: list[nn.Module] = []
        in_planes = nf
        for multiplier, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            planes = nf * multiplier
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_planes, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (global average pool of the last stage)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        pooled: torch.Tensor = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over all classes."""
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


class MLP(nn.Module):
    """Fully connected network on flattened images with ReLU hidden layers."""

    def __init__(self, in_features: int, n_classes: int, hidden: tuple[int, ...] = (100, 100)) -> None:
        """Create the network."""
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the last hidden layer."""
        hidden: torch.Tensor = self.body(x)
        return hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over all classes."""
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


@dataclass(frozen=True)
class ResNetArgs:
    """Arguments of the CIFAR ResNet-18."""

    nf: int = field(default=64, metadata={"help": "width of the first stage: 64 full, 20 reduced"})


@dataclass(frozen=True)
class MLPArgs:
    """Arguments of the MLP."""

    hidden: tuple[int, ...] = field(default=(100, 100), metadata={"help": "sizes of the hidden layers"})


@BACKBONES.register("resnet18", args=ResNetArgs, help="CIFAR ResNet-18 (3x3 stem, no max-pool), width nf")
def resnet18(args: ResNetArgs, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Build the CIFAR ResNet-18."""
    return CifarResNet18(input_shape[0], n_classes, nf=args.nf)


@BACKBONES.register("mlp", args=MLPArgs, help="MLP on flattened images (default two hidden layers of 100)")
def mlp(args: MLPArgs, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Build the MLP."""
    c, h, w = input_shape
    return MLP(c * h * w, n_classes, hidden=args.hidden)
