"""Single-modality encoders. Each maps one image channel to a tuple of features, shallow to deep.

Both encoders end every level with an optional bias-free 1x1x1 projection (as the reference
``magnet`` v2 does before fusion), so the features of different modalities are mixed in a space
each encoder learns for that purpose.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.blocks import Convolution
from monai.networks.blocks.patchembedding import PatchEmbeddingBlock
from monai.networks.blocks.transformerblock import TransformerBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrPrUpBlock
from torch import Tensor, nn

__all__ = ["ViTBackbone", "UNETREncoder", "UNetEncoder", "fusion_projections"]


def fusion_projections(widths: Sequence[int], enabled: bool) -> nn.ModuleList:
    """One bias-free 1x1x1 convolution per feature level (identity when disabled)."""
    return nn.ModuleList(
        nn.Conv3d(w, w, kernel_size=1, bias=False) if enabled else nn.Identity() for w in widths
    )


class ViTBackbone(nn.Module):
    """The ViT of UNETR built from MONAI blocks, returning only the hidden states UNETR uses.

    Parameter names equal ``monai.networks.nets.ViT`` (``patch_embedding``, ``blocks``, ``norm``),
    so MONAI UNETR / reference weights load unchanged; unlike MONAI's ``ViT`` it can use
    ``scaled_dot_product_attention`` and keeps no list of all twelve hidden states.

    Args:
        in_channels: input channels (1: one modality).
        img_size: input size (D, H, W), fixes the number of tokens.
        patch_size: token edge length in voxels.
        hidden_size, mlp_dim, num_layers, num_heads, dropout_rate: transformer settings.
        proj_type: MONAI patch embedding, ``"perceptron"`` or ``"conv"``.
        flash_attention: use PyTorch's fused attention kernel.
    """

    def __init__(
        self,
        in_channels: int,
        img_size: Sequence[int],
        patch_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        proj_type: str = "perceptron",
        dropout_rate: float = 0.0,
        flash_attention: bool = True,
    ) -> None:
        super().__init__()
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=in_channels,
            img_size=tuple(img_size),
            patch_size=patch_size,
            hidden_size=hidden_size,
            num_heads=num_heads,
            proj_type=proj_type,
            dropout_rate=dropout_rate,
            spatial_dims=3,
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate, use_flash_attention=flash_attention)
            for _ in range(num_layers)
        )
        for block in self.blocks:
            # MONAI creates this LayerNorm even without cross-attention and never uses it; it stays
            # in the state dict (reference weights keep loading) but frozen, so DDP sees no unused
            # trainable parameter
            block.norm_cross_attn.requires_grad_(False)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: Tensor, keep: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
        """
        Args:
            x: (B, C, D, H, W).
            keep: indices of the transformer blocks whose outputs are returned.
        Returns:
            The normalised last hidden state (B, N, hidden) and the kept hidden states, in order.
        """
        x = self.patch_embedding(x)
        kept = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in keep:
                kept.append(x)
        return self.norm(x), kept


class UNETREncoder(nn.Module):
    """UNETR encoder of one modality: ViT plus the convolutional skip branches.

    Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image Segmentation", WACV 2022; the
    split into encoder and decoder follows MAG-MS (He et al., ISBI 2024, arXiv 2306.03730).

    Args:
        img_size: input size (D, H, W), divisible by ``patch_size``.
        feature_size: width of the shallowest skip; deeper skips are 2, 4, 8 times wider.
        skip_layers: transformer blocks (from 0) feeding skips 2, 3 and 4.
        fuse_projection: end each level with a bias-free 1x1x1 convolution.
        norm: normalisation name for the convolutional blocks.
        res_block: residual convolutional blocks.
        Remaining arguments: see :class:`ViTBackbone`.

    Examples::

        >>> enc = UNETREncoder(img_size=(32, 32, 32), hidden_size=48, mlp_dim=96, num_heads=4, num_layers=4,
        ...                    skip_layers=(0, 1, 2))
        >>> [f.shape[1] for f in enc(torch.zeros(1, 1, 32, 32, 32))]
        [16, 32, 64, 128, 48]
    """

    def __init__(
        self,
        img_size: Sequence[int],
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        num_layers: int = 12,
        patch_size: int = 16,
        skip_layers: Sequence[int] = (3, 6, 9),
        proj_type: str = "perceptron",
        norm: str = "instance",
        res_block: bool = True,
        dropout_rate: float = 0.0,
        flash_attention: bool = True,
        fuse_projection: bool = True,
    ) -> None:
        super().__init__()
        if len(skip_layers) != 3:
            raise ValueError(f"skip_layers must name three transformer blocks, got {skip_layers}")
        self.skip_layers = tuple(skip_layers)
        self.grid = tuple(s // patch_size for s in img_size)
        self.vit = ViTBackbone(
            1, img_size, patch_size, hidden_size, mlp_dim, num_layers, num_heads, proj_type, dropout_rate, flash_attention
        )
        self.encoder1 = UnetrBasicBlock(3, 1, feature_size, kernel_size=3, stride=1, norm_name=norm, res_block=res_block)
        self.encoder2, self.encoder3, self.encoder4 = (
            UnetrPrUpBlock(
                3,
                hidden_size,
                feature_size * mult,
                num_layer=n_up,
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                norm_name=norm,
                conv_block=True,
                res_block=res_block,
            )
            for mult, n_up in ((2, 2), (4, 1), (8, 0))
        )
        self.widths = (feature_size, 2 * feature_size, 4 * feature_size, 8 * feature_size, hidden_size)
        self.fuse = fusion_projections(self.widths, fuse_projection)

    def _tokens_to_volume(self, x: Tensor) -> Tensor:
        # (B, N, hidden) -> (B, hidden, d, h, w)
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.grid)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """
        Args:
            x: (B, 1, D, H, W) one modality.
        Returns:
            Five features (B, C_l, ...): skips at full, 1/2, 1/4, 1/8 resolution and the bottleneck
            at 1/16 (C_l = feature_size * (1, 2, 4, 8) and hidden_size).
        """
        last, (h1, h2, h3) = self.vit(x, self.skip_layers)
        features = (
            self.encoder1(x),
            self.encoder2(self._tokens_to_volume(h1)),
            self.encoder3(self._tokens_to_volume(h2)),
            self.encoder4(self._tokens_to_volume(h3)),
            self._tokens_to_volume(last),
        )
        return tuple(proj(f) for proj, f in zip(self.fuse, features))


class UNetEncoder(nn.Module):
    """Light residual 3-D U-Net encoder of one modality (MONAI ``Convolution`` blocks).

    Level ``i`` is ``a = conv(x)`` (stride 2 below the first level) followed by
    ``a + conv(conv(a))``; the same design as the reference ``magnet`` v2 U-Net encoder.

    Args:
        channels: widths shallow to deep, e.g. ``(16, 32, 64, 128)``.
        norm: normalisation name.
        fuse_projection: end each level with a bias-free 1x1x1 convolution.

    Examples::

        >>> [f.shape[-1] for f in UNetEncoder((8, 16, 32))(torch.zeros(1, 1, 16, 16, 16))]
        [16, 8, 4]
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128), norm: str = "instance", fuse_projection: bool = True) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"channels must list at least two widths, got {channels}")
        act = ("leakyrelu", {"negative_slope": 0.2})
        self.levels = nn.ModuleList()
        in_ch = 1
        for i, ch in enumerate(channels):
            self.levels.append(
                nn.ModuleList(
                    [
                        Convolution(3, in_ch, ch, strides=1 if i == 0 else 2, kernel_size=3, norm=norm, act=act),
                        Convolution(3, ch, ch, kernel_size=3, norm=norm, act=act),
                        Convolution(3, ch, ch, kernel_size=3, norm=norm, act=act),
                    ]
                )
            )
            in_ch = ch
        self.widths = tuple(channels)
        self.fuse = fusion_projections(self.widths, fuse_projection)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """
        Args:
            x: (B, 1, D, H, W), each of D, H, W divisible by ``2 ** (len(channels) - 1)``.
        Returns:
            One feature per level, (B, channels[i], D / 2**i, H / 2**i, W / 2**i).
        """
        features = []
        for (down, conv_a, conv_b), proj in zip(self.levels, self.fuse):
            x = down(x)
            x = x + conv_b(conv_a(x))
            features.append(proj(x))
        return tuple(features)
