"""MAG-MS losses: Dice+CE on every output plus KL and feature self-distillation."""

from magms.losses.distillation import FeatureMSELoss, MAGMSLoss, PixelwiseKLDivLoss

__all__ = ["FeatureMSELoss", "MAGMSLoss", "PixelwiseKLDivLoss"]
