"""The MAG-MS network: one encoder per modality slot, mean fusion of the present ones, one decoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from magms.config import NetConfig
from magms.networks.decoders import UNetDecoder, UNETRDecoder
from magms.networks.encoders import UNetEncoder, UNETREncoder
from magms.networks.guidance import ClickGuidance

__all__ = ["MAGMSNet", "MAGMSOutput", "MeanFusion", "present_mask", "build_network"]

Features = tuple[Tensor, ...]


def present_mask(present: Tensor | Sequence[str] | Sequence[int], slots: Sequence[str], batch_size: int) -> Tensor:
    """Normalise the ``present`` argument to a (B, M) bool mask on the CPU.

    Args:
        present: a (B, M) or (M,) bool tensor, or slot names / indices present in every sample.
        slots: the network's slots, in channel order.
        batch_size: B.
    Raises:
        ValueError: unknown slot, wrong shape, or a sample with no modality present.
    """
    m = len(slots)
    if isinstance(present, Tensor):
        mask = present.detach().to("cpu", torch.bool)
        if mask.dim() == 1:
            mask = mask.expand(batch_size, m)
        if tuple(mask.shape) != (batch_size, m):
            raise ValueError(f"present must have shape ({batch_size}, {m}) or ({m},), got {tuple(present.shape)}")
    else:
        mask = torch.zeros(batch_size, m, dtype=torch.bool)
        for p in present:
            if isinstance(p, str):
                if p not in slots:
                    raise ValueError(f"present slot {p!r} is not one of the network's slots {tuple(slots)}")
                mask[:, slots.index(p)] = True
            elif isinstance(p, int) and 0 <= p < m:
                mask[:, p] = True
            else:
                raise ValueError(f"present entry {p!r} is neither a slot name nor an index below {m}")
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"no modality present for sample(s) {empty}: at least one slot per sample is needed")
    return mask


class MeanFusion(nn.Module):
    """Per-sample mean over the PRESENT modalities' features, level by level.

    Absent modalities take no part: averaging in zeros for them would drag the fused features
    towards 0 and make the output depend on how many slots the model happens to have.
    """

    def forward(self, features: dict[int, Features], batch: dict[int, Tensor | None], counts: Tensor) -> Features:
        """
        Args:
            features: slot index -> that modality's features, each (B_m, C_l, ...) for the B_m
                samples in which it is present.
            batch: slot index -> indices of those samples in the batch, or None for all samples.
            counts: (B,) number of present modalities per sample.
        Returns:
            Fused features, each (B, C_l, ...).
        """
        fused: list[Tensor | None] = []
        for slot, feats in features.items():
            idx = batch[slot]
            for level, f in enumerate(feats):
                if level == len(fused):
                    shape = (counts.shape[0], *f.shape[1:])
                    fused.append(f.clone() if idx is None else f.new_zeros(shape).index_add_(0, idx, f))
                elif idx is None:
                    fused[level] = fused[level] + f
                else:
                    fused[level] = fused[level].index_add(0, idx, f)
        scale = counts.to(fused[0].dtype)
        return tuple(f / scale.view(-1, *([1] * (f.dim() - 1))) for f in fused)


@dataclasses.dataclass
class MAGMSOutput:
    """Everything the MAG-MS loss needs from one training forward pass.

    Attributes:
        logits: (B, C, D, H, W) prediction from the fused features.
        fused_features: fused features per level, each (B, C_l, ...).
        modality_logits: slot -> (B_m, C, D, H, W) prediction from that modality alone (the slots
            decoded: all present ones, or those drawn by ``singles``).
        modality_features: slot -> its features per level, each (B_m, C_l, ...).
        modality_batch: slot -> (B_m,) indices into the batch of the samples that have it.
    """

    logits: Tensor
    fused_features: Features
    modality_logits: dict[str, Tensor]
    modality_features: dict[str, Features]
    modality_batch: dict[str, Tensor]


class MAGMSNet(nn.Module):
    """Modality-agnostic segmentation network with multi-modality self-distillation outputs.

    He, Summerfield, Dong, Glide-Hurst, "Modality-Agnostic Learning for Medical Image Segmentation
    Using Multi-modality Self-distillation", ISBI 2024 (arXiv 2306.03730).

    Only the present slots' encoders run; an absent slot's input channel is never read, so it
    cannot change the output. In ``train()`` mode the forward also decodes each present modality
    on its own and returns an :class:`MAGMSOutput`; in ``eval()`` mode it returns the fused logits.

    Args:
        slots: modality keys in input-channel order.
        encoders: one encoder per slot (same output widths).
        decoder: shared decoder taking a tuple of features.
        checkpointing: recompute encoder and decoder activations during backward: less memory
            for about one more forward pass of time.
        guidance: click guidance added to the fused features (:class:`~magms.networks.guidance.ClickGuidance`),
            or None for a network that takes no clicks.

    Examples::

        >>> net = build_network(NetConfig(slots=("flair", "t1c"), out_channels=4, img_size=(32, 32, 32)))
        >>> net.eval()(torch.zeros(1, 2, 32, 32, 32), present=["t1c"]).shape
        torch.Size([1, 4, 32, 32, 32])
    """

    def __init__(
        self, slots: Sequence[str], encoders: Sequence[nn.Module], decoder: nn.Module, checkpointing: bool = False,
        guidance: ClickGuidance | None = None,
    ) -> None:
        super().__init__()
        if len(slots) != len(encoders) or not slots:
            raise ValueError(f"need one encoder per slot, got {len(encoders)} encoders for slots {tuple(slots)}")
        self.slots = tuple(slots)
        self.encoders = nn.ModuleDict(dict(zip(self.slots, encoders)))
        self.fusion = MeanFusion()
        self.decoder = decoder
        self.checkpointing = checkpointing
        self.guidance = guidance

    def _recompute(self) -> bool:
        return self.checkpointing and self.training and torch.is_grad_enabled()

    def _encode(self, slot: str, x: Tensor) -> Features:
        encoder = self.encoders[slot]
        return checkpoint(encoder, x, use_reentrant=False) if self._recompute() else encoder(x)

    def _decode(self, features: Features) -> Tensor:
        # with checkpointing each pass is recomputed on its own in backward, so only one pass's
        # full-resolution activations are alive at a time
        return checkpoint(self.decoder, features, use_reentrant=False) if self._recompute() else self.decoder(features)

    def _encode_present(
        self, x: Tensor, present: Tensor | Sequence[str] | Sequence[int]
    ) -> tuple[dict[int, Features], dict[int, Tensor | None], Tensor]:
        """Each present slot's features, the batch rows that have it (None: all) and the count per sample."""
        if x.dim() != 5 or x.shape[1] != len(self.slots):
            raise ValueError(
                f"x must be (B, {len(self.slots)}, D, H, W) for slots {self.slots}, got shape {tuple(x.shape)}"
            )
        mask = present_mask(present, self.slots, x.shape[0])
        counts = mask.sum(dim=1).to(x.device)
        features: dict[int, Features] = {}
        batch: dict[int, Tensor | None] = {}
        for m, slot in enumerate(self.slots):
            rows = mask[:, m]
            if not rows.any():
                continue
            if rows.all():
                batch[m] = None
                features[m] = self._encode(slot, x[:, m : m + 1])
            else:
                idx = rows.nonzero().flatten().to(x.device)
                batch[m] = idx
                features[m] = self._encode(slot, x.index_select(0, idx)[:, m : m + 1])
        return features, batch, counts

    def fuse(self, x: Tensor, present: Tensor | Sequence[str] | Sequence[int]) -> Features:
        """The fused features of the present slots, each (B, C_l, ...): what :meth:`decode` reads.

        A caller that decodes one window several times with different clicks encodes it once.
        """
        features, batch, counts = self._encode_present(x, present)
        return self.fusion(features, batch, counts)

    def decode(self, fused: Features, clicks: Tensor | None = None) -> Tensor:
        """Logits (B, C, D, H, W) from fused features, corrected by the click maps when given.

        Args:
            fused: :meth:`fuse`'s features.
            clicks: (B, 2R, D, H, W) click maps (:func:`magms.clicks.click_maps`) at the input's size, or None.
        Raises:
            ValueError: clicks for a network without guidance, or maps of the wrong shape.
        """
        if clicks is not None:
            if self.guidance is None:
                raise ValueError("this network takes no clicks (its bundle has no click guidance)")
            if clicks.dim() != 5 or clicks.shape[0] != fused[0].shape[0] or clicks.shape[2:] != fused[0].shape[2:]:
                raise ValueError(f"click maps must be (B, 2R, {tuple(fused[0].shape[2:])}), got {tuple(clicks.shape)}")
            fused = tuple(f + g for f, g in zip(fused, self.guidance(clicks.to(fused[0].dtype), fused)))
        return self._decode(fused)

    def forward(
        self, x: Tensor, present: Tensor | Sequence[str] | Sequence[int], singles: int | None = None, clicks: Tensor | None = None
    ) -> Tensor | MAGMSOutput:
        """
        Args:
            x: (B, M, D, H, W); channel m is slot m, absent ones ignored.
            present: (B, M) or (M,) bool mask, or the present slots' names or indices.
            singles: train mode: decode the single-modality outputs of only this many of the batch's
                present slots, drawn at random (torch's generator); the others are still encoded, fused
                and their features distilled. None: every present slot's (the paper).
            clicks: eval mode: (B, 2R, D, H, W) click maps for a network with guidance (see :meth:`decode`).
        Returns:
            eval mode: (B, C, D, H, W) logits of the fused prediction.
            train mode: :class:`MAGMSOutput` with the fused and per-modality logits and features.
        Raises:
            ValueError: ``x`` is not 5-D with one channel per slot, or a sample has no slot present.
        """
        features, batch, counts = self._encode_present(x, present)
        fused = self.fusion(features, batch, counts)
        if not self.training:
            return self.decode(fused, clicks)
        # one decoder pass per output: measured faster on the CPU than one pass over the
        # concatenated batch, and it keeps the memory peak of checkpointing to one pass
        all_rows = torch.arange(x.shape[0], device=x.device)
        decoded = list(features)
        if singles is not None and singles < len(decoded):
            decoded = sorted(decoded[i] for i in torch.randperm(len(decoded))[:singles].tolist())
        return MAGMSOutput(
            logits=self._decode(fused),
            fused_features=fused,
            modality_logits={self.slots[m]: self._decode(features[m]) for m in decoded},
            modality_features={self.slots[m]: f for m, f in features.items()},
            modality_batch={self.slots[m]: all_rows if batch[m] is None else batch[m] for m in features},
        )

    def decode_subset(self, output: MAGMSOutput, subset: Tensor) -> Tensor:
        """Fused logits of a subset of each sample's present modalities, from the features a
        training forward already holds: no encoder runs again (the random-subset policy).

        Args:
            output: a train-mode forward's :class:`MAGMSOutput` for a batch of B samples.
            subset: (B, M) bool; each row within that sample's present slots, at least one True.
        Returns:
            (B, C, D, H, W) logits, equal to a forward with ``subset`` as the present mask.
        Raises:
            ValueError: a row is empty or names a slot the forward did not encode for that sample.
        """
        batch_size = output.logits.shape[0]
        if subset.shape != (batch_size, len(self.slots)) or not subset.any(dim=1).all():
            raise ValueError(f"subset must be ({batch_size}, {len(self.slots)}) with a True in every row, got {tuple(subset.shape)}")
        device = output.logits.device
        subset = subset.to(device)
        encoded = torch.zeros_like(subset)
        features: dict[int, Features] = {}
        batch: dict[int, Tensor | None] = {}
        for m, slot in enumerate(self.slots):
            if slot not in output.modality_features:
                continue
            rows = output.modality_batch[slot].to(device)
            encoded[rows, m] = True
            keep = subset[rows, m].nonzero().flatten()
            if keep.numel():
                features[m] = tuple(f.index_select(0, keep) for f in output.modality_features[slot])
                batch[m] = rows.index_select(0, keep)
        if (subset & ~encoded).any():
            raise ValueError("subset holds slots that were not present in the forward pass")
        return self._decode(self.fusion(features, batch, subset.sum(dim=1)))


def build_network(config: NetConfig) -> MAGMSNet:
    """Build the network a :class:`~magms.config.NetConfig` describes (weights randomly initialised)."""
    if config.backbone == "unetr":
        encoders = [
            UNETREncoder(
                img_size=config.img_size,
                feature_size=config.feature_size,
                hidden_size=config.hidden_size,
                mlp_dim=config.mlp_dim,
                num_heads=config.num_heads,
                num_layers=config.num_layers,
                patch_size=config.patch_size,
                skip_layers=config.skip_layers,
                proj_type=config.proj_type,
                norm=config.norm,
                res_block=config.res_block,
                dropout_rate=config.dropout_rate,
                flash_attention=config.flash_attention,
                fuse_projection=config.fuse_projection,
            )
            for _ in config.slots
        ]
        decoder: nn.Module = UNETRDecoder(
            config.out_channels, config.feature_size, config.hidden_size, config.norm, config.res_block
        )
    else:
        encoders = [UNetEncoder(config.channels, config.norm, config.fuse_projection) for _ in config.slots]
        decoder = UNetDecoder(config.out_channels, config.channels, config.norm)
    guidance = ClickGuidance(config.click_regions, config.channels) if config.click_regions else None
    return MAGMSNet(config.slots, encoders, decoder, checkpointing=config.checkpointing, guidance=guidance)
