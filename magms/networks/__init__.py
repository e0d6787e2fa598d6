"""MAG-MS networks: per-modality encoders, mean fusion of the present ones, a shared decoder."""

from magms.networks.decoders import UNetDecoder, UNETRDecoder
from magms.networks.encoders import UNetEncoder, UNETREncoder, ViTBackbone
from magms.networks.magms_net import MAGMSNet, MAGMSOutput, MeanFusion, build_network, present_mask

__all__ = [
    "MAGMSNet",
    "MAGMSOutput",
    "MeanFusion",
    "UNETRDecoder",
    "UNETREncoder",
    "UNetDecoder",
    "UNetEncoder",
    "ViTBackbone",
    "build_network",
    "present_mask",
]
