"""Ratings into the photographer's catalogue: XMP sidecars (Adobe or darktable names) and XMP
embedded in JPEG, TIFF, PNG and DNG files, merged with what is already there; and the
photographer's own ratings read back from them (never mistaking kullbatch's for theirs)."""

from kullbatch.catalogue._embed import EMBEDDABLE_SUFFIXES, EmbedError, embeddable, read_embedded
from kullbatch.catalogue._ours import NS_KB, Stamp
from kullbatch.catalogue._packet import SidecarError, packet_text
from kullbatch.catalogue._sidecars import (
    SidecarStyle,
    Target,
    photo_files,
    write_atomically,
    xmp_targets,
)
from kullbatch.catalogue._theirs import Found, TheirRatings, rating_in
from kullbatch.catalogue._write import XmpOptions, XmpReport, write_xmp

__all__ = [
    "EMBEDDABLE_SUFFIXES",
    "NS_KB",
    "EmbedError",
    "Found",
    "SidecarError",
    "SidecarStyle",
    "Stamp",
    "Target",
    "TheirRatings",
    "XmpOptions",
    "XmpReport",
    "embeddable",
    "packet_text",
    "photo_files",
    "rating_in",
    "read_embedded",
    "write_atomically",
    "write_xmp",
    "xmp_targets",
]
