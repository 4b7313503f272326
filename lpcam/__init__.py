"""lpcam: class activation maps from local prototypes (LPCAM) beside classic CAM, on Lightning + Hydra."""

__version__ = "0.1.0"
