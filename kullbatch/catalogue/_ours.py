"""Whose rating is whose in an XMP packet: the photographer's `xmp:Rating`, kullbatch's stars.

kullbatch writes its own stars in its own namespace (`kullbatch:Rating`, with the job that
rated the photo in `kullbatch:Job`, and when present the rating's `kullbatch:Score` and the
burst comparison's `kullbatch:GroupRank` and `kullbatch:GroupReason`). It writes
`xmp:Rating` only where the packet holds no rating of the photographer's, and then records
the value it wrote in `kullbatch:WroteRating`: an `xmp:Rating` equal to it is kullbatch's own;
any other (set in Lightroom, Bridge, darktable or by hand after kullbatch wrote) is the
photographer's, and is never overwritten unless asked (`results --overwrite-ratings`) nor
taken for kullbatch's. A rating of 0 is "unrated" in every
program, so it is nobody's pick.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kullbatch.models import Rating

NS_KB = "https://kullbatch.dev/ns/xmp/1.0/"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_DC = "http://purl.org/dc/elements/1.1/"
ET.register_namespace("kullbatch", NS_KB)

XMP_RATING = f"{{{NS_XMP}}}Rating"
KB_RATING = f"{{{NS_KB}}}Rating"  # kullbatch's stars (-1 when it writes the photo rejected)
KB_JOB = f"{{{NS_KB}}}Job"  # the job whose stars they are
KB_WROTE = f"{{{NS_KB}}}WroteRating"  # the xmp:Rating kullbatch wrote; absent: not kullbatch's
KB_SCORE = f"{{{NS_KB}}}Score"  # the rating's score (0-100), when it has one
KB_GROUP_RANK = f"{{{NS_KB}}}GroupRank"  # --compare-bursts: the frame's place (1 = best)
KB_GROUP_REASON = f"{{{NS_KB}}}GroupReason"  # --compare-bursts: why, in the model's words
OURS = (KB_RATING, KB_JOB, KB_WROTE, KB_SCORE, KB_GROUP_RANK, KB_GROUP_REASON)


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a packet says of who rated: the job, the photographer's own stars set in
    kullbatch's dashboard (written as `xmp:Rating`: their choice wins), and whether
    `xmp:Rating` may be overwritten with kullbatch's stars anyway; then what kullbatch writes
    beside its stars when it has it: the rating's score, the burst comparison's rank and
    reason (`--compare-bursts`)."""

    job_id: str | None = None
    photographer: int | None = None
    overwrite: bool = False
    score: int | None = None
    group_rank: int | None = None
    group_reason: str | None = None


def _number(text: str | None) -> int | None:
    """An xmp:Rating as a whole number (Lightroom writes "4", some tools "4.0"); None if none."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return int(value) if math.isfinite(value) else None


def _value(root: ET.Element, name: str) -> str | None:
    """A simple property's value, as an attribute or an element of any rdf:Description."""
    for description in root.iter(f"{{{NS_RDF}}}Description"):
        if name in description.attrib:
            return description.attrib[name]
        child = description.find(name)
        if child is not None:
            return child.text or ""
    return None


def _description_text(root: ET.Element) -> str | None:
    for prop in root.iter(f"{{{NS_DC}}}description"):
        return "".join(li.text or "" for li in prop.iter(f"{{{NS_RDF}}}li"))
    return None


def _legacy_ours(root: ET.Element, rating: int, ours: Rating | None) -> bool:
    """Written by a kullbatch from before `kullbatch:WroteRating`: no kullbatch: property, the
    model's very description, and its stars (or a rejection). A photographer types neither."""
    if ours is None or _value(root, KB_RATING) is not None:
        return False
    return rating in {ours.starRating, -1} and _description_text(root) == ours.description


def photographers(root: ET.Element, ours: Rating | None = None) -> int | None:
    """The photographer's own rating in a packet (-1..5), or None: no `xmp:Rating`, an unrated
    0, or the value kullbatch wrote itself (`ours`, the photo's rating, recognises a packet an
    older kullbatch wrote)."""
    rating = _number(_value(root, XMP_RATING))
    if rating is None or rating == 0:
        return None
    if _number(_value(root, KB_WROTE)) == rating or _legacy_ours(root, rating, ours):
        return None
    return rating


def decide(
    root: ET.Element | None, stamp: Stamp, stars: int, ours: Rating | None = None
) -> int | None:
    """The `xmp:Rating` to write: the photographer's dashboard stars, else kullbatch's stars;
    None to leave the packet's own `xmp:Rating` as it is (it is the photographer's)."""
    if stamp.photographer is not None:
        return stamp.photographer
    if root is not None and not stamp.overwrite and photographers(root, ours) is not None:
        return None
    return stars


def properties(stamp: Stamp, stars: int, xmp_rating: int | None) -> list[tuple[str, str]]:
    """kullbatch's own properties (qualified name, value), in the order they are written."""
    found = [(KB_RATING, str(stars))]
    if stamp.job_id is not None:
        found.append((KB_JOB, stamp.job_id))
    if xmp_rating is not None and stamp.photographer is None:
        found.append((KB_WROTE, str(xmp_rating)))
    extra = (
        (KB_SCORE, stamp.score),
        (KB_GROUP_RANK, stamp.group_rank),
        (KB_GROUP_REASON, stamp.group_reason),
    )
    found.extend((name, str(value)) for name, value in extra if value is not None)
    return found
