"""Exporting maps to the per-image files other WSSS pipelines read (IRN, LPCAM, AMN, MCTformer)."""

from lpcam.export.formats import (
    FORMATS,
    ExportFormat,
    ImageMaps,
    IrLabelPng,
    IrnNpy,
    MctformerNpy,
    Npz,
    SeedPng,
    crf_available,
    make_format,
    strided_size,
)

__all__ = [
    "FORMATS",
    "ExportFormat",
    "ImageMaps",
    "IrLabelPng",
    "IrnNpy",
    "MctformerNpy",
    "Npz",
    "SeedPng",
    "crf_available",
    "make_format",
    "strided_size",
]
