"""lpcam: class activation maps from local prototypes (LPCAM) beside classic CAM, on Lightning + Hydra."""

from lpcam.hardware import register_resolvers

__version__ = "0.1.0"

register_resolvers()  # ${lpcam.cpu_precision:} in conf/trainer/cpu.yaml resolves wherever lpcam is imported
