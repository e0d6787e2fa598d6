"""The shared decoders: fused (or one modality's) features in, class logits out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import UnetrUpBlock
from torch import Tensor, nn

__all__ = ["UNETRDecoder", "UNetDecoder"]


class UNETRDecoder(nn.Module):
    """UNETR's convolutional decoder (Hatamizadeh et al., WACV 2022), shared by all modalities.

    Args:
        out_channels: number of classes.
        feature_size: width of the shallowest skip (as in :class:`~magms.networks.UNETREncoder`).
        hidden_size: width of the bottleneck.
        norm: normalisation name.
        res_block: residual blocks.
    """

    def __init__(
        self, out_channels: int, feature_size: int = 16, hidden_size: int = 768, norm: str = "instance", res_block: bool = True
    ) -> None:
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        widths = (hidden_size, 8 * feature_size, 4 * feature_size, 2 * feature_size, feature_size)
        self.decoder5, self.decoder4, self.decoder3, self.decoder2 = (
            UnetrUpBlock(3, c_in, c_out, kernel_size=3, upsample_kernel_size=2, norm_name=norm, res_block=res_block)
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.out = UnetOutBlock(3, feature_size, out_channels)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """
        Args:
            features: (enc1, enc2, enc3, enc4, bottleneck) as returned by the UNETR encoder.
        Returns:
            (B, out_channels, D, H, W) logits at the resolution of ``enc1``.
        """
        enc1, enc2, enc3, enc4, bottleneck = features
        x = self.decoder5(bottleneck, enc4)
        x = self.decoder4(x, enc3)
        x = self.decoder3(x, enc2)
        x = self.decoder2(x, enc1)
        return self.out(x)


class UNetDecoder(nn.Module):
    """Light U-Net decoder: transposed-convolution upsampling, skip concatenation, two convolutions.

    Args:
        out_channels: number of classes.
        channels: encoder widths shallow to deep, as in :class:`~magms.networks.UNetEncoder`.
        norm: normalisation name.
    """

    def __init__(self, out_channels: int, channels: Sequence[int] = (16, 32, 64, 128), norm: str = "instance") -> None:
        super().__init__()
        if out_channels < 1:
            raise ValueError(f"out_channels must be positive, got {out_channels}")
        act = ("leakyrelu", {"negative_slope": 0.2})
        self.levels = nn.ModuleList()
        for deep, shallow in zip(channels[:0:-1], channels[-2::-1]):
            self.levels.append(
                nn.ModuleList(
                    [
                        Convolution(
                            3, deep, shallow, strides=2, kernel_size=3, norm=norm, act=act,
                            is_transposed=True, padding=1, output_padding=1,
                        ),
                        Convolution(3, 2 * shallow, shallow, kernel_size=3, norm=norm, act=act),
                        Convolution(3, shallow, shallow, kernel_size=3, norm=norm, act=act),
                    ]
                )
            )
        self.out = Convolution(3, channels[0], out_channels, kernel_size=3, conv_only=True)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """
        Args:
            features: one feature per encoder level, shallow to deep.
        Returns:
            (B, out_channels, D, H, W) logits at the resolution of the shallowest feature.
        """
        x = features[-1]
        for (up, conv_a, conv_b), skip in zip(self.levels, reversed(features[:-1])):
            x = conv_b(conv_a(torch.cat((up(x), skip), dim=1)))
        return self.out(x)
