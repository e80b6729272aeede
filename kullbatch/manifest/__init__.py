"""Turn a shoot (a JSON or CSV manifest, or a folder of photos) into ImageInputs, failing early.

Every problem is one line naming the source, the spot in it and the field, because a
photographer fixing a 10,000-row manifest needs to know exactly where to look. Locations follow
the format: ``images[3].url`` in a JSON body (``[3].url`` in a bare list; indexes start at 0, as
in jq), ``line 7, column 'url'`` in a CSV (physical lines, the header is line 1), the file name
in a folder. Local files are checked by reading their header only, so 10,000 photos load in
seconds.

The readers live in private modules, one per format: ``_base`` (the checks every format
shares), ``_json``, ``_csv``, ``_folder``, and ``_load`` (which picks one for a path).
"""

from kullbatch.manifest._base import IMAGE_SUFFIXES, Manifest, ManifestError
from kullbatch.manifest._images import ImageList
from kullbatch.manifest._json import manifest_from_document
from kullbatch.manifest._load import load_manifest
from kullbatch.manifest._parse import MAX_DEPTH, MAX_DIGITS, parse_json

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_DEPTH",
    "MAX_DIGITS",
    "ImageList",
    "Manifest",
    "ManifestError",
    "load_manifest",
    "manifest_from_document",
    "parse_json",
]
