"""Ratings into the photographer's catalogue: XMP sidecars (Adobe or darktable names) and XMP
embedded in JPEG, TIFF, PNG and DNG files, merged with what is already there."""

from kullbatch.catalogue._embed import EMBEDDABLE_SUFFIXES, EmbedError, embeddable, read_embedded
from kullbatch.catalogue._packet import SidecarError, packet_text
from kullbatch.catalogue._sidecars import SidecarStyle, Target, write_atomically, xmp_targets
from kullbatch.catalogue._write import XmpOptions, XmpReport, write_xmp

__all__ = [
    "EMBEDDABLE_SUFFIXES",
    "EmbedError",
    "SidecarError",
    "SidecarStyle",
    "Target",
    "XmpOptions",
    "XmpReport",
    "embeddable",
    "packet_text",
    "read_embedded",
    "write_atomically",
    "write_xmp",
    "xmp_targets",
]
