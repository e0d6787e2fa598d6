"""MAG-MS losses: Dice+CE on every output plus KL and feature self-distillation."""

from magms.losses.distillation import FeatureMSELoss, MAGMSLoss, PixelwiseKLDivLoss
from magms.losses.regions import RegionDiceCELoss

__all__ = ["FeatureMSELoss", "MAGMSLoss", "PixelwiseKLDivLoss", "RegionDiceCELoss"]
