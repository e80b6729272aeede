"""The XMP packet: a fresh one from a template, or an existing one with our properties replaced.

One packet text serves a sidecar and a photo's embedded XMP alike. Our properties are
xmp:Rating (unless it is the photographer's: see `_ours`), xmp:Label, dc:title, dc:description,
dc:subject, our burst keyword in lr:hierarchicalSubject and the kullbatch: namespace's; every
other property of an existing packet (Lightroom's develop settings, darktable's history) is
kept as it was.
"""

from __future__ import annotations

import contextlib
import io
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from kullbatch.catalogue._ours import NS_KB, OURS, XMP_RATING, Stamp, decide, properties
from kullbatch.errors import KullbatchError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kullbatch.models import Rating

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_LR = "http://ns.adobe.com/lightroom/1.0/"
NS_XML = "http://www.w3.org/XML/1998/namespace"
_PREFIXES = {"x": NS_X, "rdf": NS_RDF, "xmp": NS_XMP, "dc": NS_DC, "lr": NS_LR, "kullbatch": NS_KB}
REJECTED = -1  # xmp:Rating that Lightroom and Bridge read as "rejected"
BURST_KEYWORD = "kullbatch|burst|"  # + the group: lr:hierarchicalSubject of a burst's frames
for _prefix, _uri in _PREFIXES.items():
    ET.register_namespace(_prefix, _uri)

_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_END = '\n<?xpacket end="w"?>\n'
# Characters XML 1.0 forbids (controls, lone surrogates, U+FFFE/FFFF): a model may emit them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class SidecarError(KullbatchError, ValueError):
    """An existing XMP packet (a sidecar's or a photo's) is not XMP; it is left untouched."""


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def parse_packet(data: bytes, where: str) -> ET.Element:
    """An existing packet's x:xmpmeta (a bare rdf:RDF is wrapped), or SidecarError."""
    try:  # bytes, so that expat honours a BOM or an encoding declaration
        root = ET.fromstring(data)  # noqa: S314  (stdlib expat expands no external entities)
    except ET.ParseError as exc:
        raise SidecarError(f"{where}: the existing XMP is not valid XML: {exc}") from exc
    if root.tag == _q(NS_RDF, "RDF"):  # a bare rdf:RDF sidecar: wrap it
        wrapper = ET.Element(_q(NS_X, "xmpmeta"))
        wrapper.append(root)
        root = wrapper
    if root.tag != _q(NS_X, "xmpmeta") or root.find(_q(NS_RDF, "RDF")) is None:
        raise SidecarError(f"{where}: the existing XMP is not an XMP packet")
    _keep_prefixes(data)
    return root


def _keep_prefixes(data: bytes) -> None:
    """Serialise the packet's own prefixes (crs:, lr:, darktable: …) back, not ns0:, ns1: …

    ElementTree keeps prefixes in one process-wide table; our four namespaces keep ours.
    """
    events = ET.iterparse(io.BytesIO(data), events=("start-ns",))  # noqa: S314  (parsed above)
    for _, (prefix, uri) in events:
        if prefix and uri not in _PREFIXES.values() and prefix not in _PREFIXES:
            with contextlib.suppress(ValueError):  # prefixes like ns1 are reserved
                ET.register_namespace(prefix, uri)


_OWNED = (_q(NS_XMP, "Rating"), _q(NS_XMP, "Label"))
_OWNED_DC = tuple(_q(NS_DC, name) for name in ("title", "description", "subject"))


def _description(root: ET.Element, *, theirs: bool = False) -> ET.Element:
    """The first rdf:Description, after removing our properties from every Description
    (but the photographer's `xmp:Rating` where `theirs`)."""
    rdf = root.find(_q(NS_RDF, "RDF"))
    assert rdf is not None  # checked by parse_packet
    descriptions = rdf.findall(_q(NS_RDF, "Description"))
    owned = [name for name in (*_OWNED, *_OWNED_DC, *OURS) if not theirs or name != XMP_RATING]
    for description in descriptions:
        for name in owned:
            description.attrib.pop(name, None)
            for child in description.findall(name):
                description.remove(child)
    if descriptions:
        return descriptions[0]
    return ET.SubElement(rdf, _q(NS_RDF, "Description"), {_q(NS_RDF, "about"): ""})


def _container(parent: ET.Element, prop: str, kind: str, values: Iterable[str]) -> None:
    holder = ET.SubElement(ET.SubElement(parent, prop), _q(NS_RDF, kind))
    attrib = {_q(NS_XML, "lang"): "x-default"} if kind == "Alt" else {}
    for value in values:
        ET.SubElement(holder, _q(NS_RDF, "li"), attrib).text = _clean(value)


def keywords(rating: Rating) -> list[str]:
    """dc:subject: the model's tags, then the issues it found (each once), for keyword filters."""
    return list(dict.fromkeys([*rating.tags, *rating.issues]))


def _merge_hierarchical(
    root: ET.Element, description: ET.Element, tags: list[str], group: str | None
) -> None:
    """Add our keywords to an existing lr:hierarchicalSubject, which darktable reads first; our
    burst keyword replaces an earlier one, and gets a new bag when there is none."""
    burst = [BURST_KEYWORD + group] if group else []
    found = False
    for bag in list(root.iter(_q(NS_LR, "hierarchicalSubject"))):
        holder = bag.find(_q(NS_RDF, "Bag"))
        if holder is None:
            continue
        found = True
        for li in holder.findall(_q(NS_RDF, "li")):
            if (li.text or "").startswith(BURST_KEYWORD):
                holder.remove(li)
        present = {li.text for li in holder.findall(_q(NS_RDF, "li"))}
        for tag in (_clean(tag) for tag in [*tags, *burst]):
            if tag and tag not in present:
                ET.SubElement(holder, _q(NS_RDF, "li")).text = tag
                present.add(tag)
    if burst and not found:
        _container(description, _q(NS_LR, "hierarchicalSubject"), "Bag", burst)


def _merged_text(
    root: ET.Element, rating: Rating, stars: int, group: str | None, stamp: Stamp
) -> str:
    """An existing packet with our properties replaced (ElementTree; the slow, rare path)."""
    xmp_rating = decide(root, stamp, stars, rating)
    description = _description(root, theirs=xmp_rating is None)
    if xmp_rating is not None:
        ET.SubElement(description, XMP_RATING).text = str(xmp_rating)
    if rating.colorLabel != "none":
        ET.SubElement(description, _q(NS_XMP, "Label")).text = rating.colorLabel.capitalize()
    _container(description, _q(NS_DC, "title"), "Alt", [rating.title])
    _container(description, _q(NS_DC, "description"), "Alt", [rating.description])
    _container(description, _q(NS_DC, "subject"), "Bag", keywords(rating))
    _merge_hierarchical(root, description, keywords(rating), group)
    for name, value in properties(stamp, stars, xmp_rating):
        ET.SubElement(description, name).text = _clean(value)
    ET.indent(root, space=" ")
    return _XPACKET_BEGIN + ET.tostring(root, encoding="unicode") + _XPACKET_END


def _li(indent: str, value: str, attributes: str = "") -> str:
    text = escape(_clean(value))
    if not text:  # ElementTree's short form, so that both paths give the same bytes
        return f"{indent}<rdf:li{attributes} />\n"
    return f"{indent}<rdf:li{attributes}>{text}</rdf:li>\n"


def _fresh_container(prop: str, kind: str, items: list[str]) -> str:
    if not items:
        return f"   <{prop}>\n    <rdf:{kind} />\n   </{prop}>\n"
    attributes = ' xml:lang="x-default"' if kind == "Alt" else ""
    body = "".join(_li("     ", value, attributes) for value in items)
    return f"   <{prop}>\n    <rdf:{kind}>\n{body}    </rdf:{kind}>\n   </{prop}>\n"


def _fresh_text(rating: Rating, stars: int, group: str | None, stamp: Stamp) -> str:
    """A new packet from a template: byte for byte what `_merged_text` gives for no packet."""
    xmp_rating = decide(None, stamp, stars)
    ours = "".join(
        f"   <kullbatch:{local}>{escape(_clean(value))}</kullbatch:{local}>\n"
        for local, value in (
            (name.rpartition("}")[2], value) for name, value in properties(stamp, stars, xmp_rating)
        )
    )
    label = rating.colorLabel
    burst = [BURST_KEYWORD + group] if group else []
    lr_declaration = f' xmlns:lr="{NS_LR}"' if burst else ""
    label_line = "" if label == "none" else f"   <xmp:Label>{label.capitalize()}</xmp:Label>\n"
    return "".join(
        (
            _XPACKET_BEGIN,
            f'<x:xmpmeta xmlns:dc="{NS_DC}" xmlns:kullbatch="{NS_KB}"',
            f'{lr_declaration} xmlns:rdf="{NS_RDF}" ',
            f'xmlns:x="{NS_X}" xmlns:xmp="{NS_XMP}">\n <rdf:RDF>\n',
            '  <rdf:Description rdf:about="">\n',
            f"   <xmp:Rating>{xmp_rating}</xmp:Rating>\n",
            label_line,
            _fresh_container("dc:title", "Alt", [rating.title]),
            _fresh_container("dc:description", "Alt", [rating.description]),
            _fresh_container("dc:subject", "Bag", keywords(rating)),
            _fresh_container("lr:hierarchicalSubject", "Bag", burst) if burst else "",
            ours,
            "  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>",
            _XPACKET_END,
        )
    )


def packet_text(
    existing: bytes | None,
    rating: Rating,
    where: str,
    *,
    stars: int | None = None,
    group: str | None = None,
    stamp: Stamp | None = None,
) -> str:
    """The packet for one rating: `existing` (when there is one) updated, or a new packet.

    `stars` overrides the rating's (REJECTED for a burst's other frames); `group` is the burst;
    `stamp` says whose `xmp:Rating` is whose (a photographer's is kept, see `_ours`).
    """
    stars = rating.starRating if stars is None else stars
    stamp = stamp or Stamp()
    if existing is None or not existing.strip():
        return _fresh_text(rating, stars, group, stamp)
    return _merged_text(parse_packet(existing, where), rating, stars, group, stamp)
