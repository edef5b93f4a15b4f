"""ResNet18 FaceEncoder as in the paper (section 4.2): 3x3 stride-2 stem, no max-pool, E = 512 x 8 x 8 at 128 px."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from model.encoders.common import InputAdapter
from model.encoders.registry import FaceEncoder, register_encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNet18Encoder(FaceEncoder):
    """torchvision's resnet18 (no weights) with the paper's stem; 128 -> 64 (stem) -> 64, 32, 16, 8 (stages)."""

    out_channels = 512

    def __init__(self, input_size: int = 128) -> None:
        super().__init__()
        self.input_size = input_size
        self.out_size = input_size // 16
        self.adapter = InputAdapter(input_size, IMAGENET_MEAN, IMAGENET_STD)
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.adapter(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@register_encoder("resnet18")
def build_resnet18(input_size: int | None = None) -> FaceEncoder:
    return ResNet18Encoder(input_size or 128)
