"""Results writers: JSON, JSON Lines, CSV for scripts; XMP sidecars for photo software.

Every writer takes items in manifest order and writes as it iterates, so 10,000 images cost
10,000 small writes, never one big string built up piece by piece.

Per-image objects (JSON, JSON Lines):
- rated:   imageId, filename, starRating, colorLabel, title, description, tags
- failed:  imageId, filename, error
- pending: imageId, filename, status="pending" (the job has not reached the image yet)

CSV has one row per image with a fixed header; a pending image has only imageId and filename.
Open CSV files with ``newline=""``; rows end in CRLF as RFC 4180 says.

XMP sidecars (rated local images only) are named for Lightroom: ``<stem>.xmp`` beside the image,
or in ``out_dir``. When two images claim the same sidecar name (``IMG_1.CR2`` and ``IMG_1.jpg``
in one folder, or ``a/IMG_1.jpg`` and ``b/IMG_1.jpg`` written to one ``out_dir``), the first in
manifest order keeps ``<stem>.xmp`` and the others get ``<file name>.xmp`` (``IMG_1.jpg.xmp``,
the darktable convention), then ``<stem>_2.xmp``, ``<stem>_3.xmp`` … Names are compared
case-insensitively, because macOS and Windows compare them so. A sidecar that already exists
(Lightroom keeps raw develop settings in it) is updated in place: our five properties are
replaced and everything else is kept. Each file is written to a temporary file and renamed over
the target, so a crash never leaves half a sidecar.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO
from xml.sax.saxutils import escape

from kullbatch.models import ItemRecord, ItemState, JobStatus, Rating

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

__all__ = [
    "CSV_HEADER",
    "SidecarError",
    "result_object",
    "results_document",
    "write_csv",
    "write_json",
    "write_jsonl",
    "write_xmp",
    "xmp_targets",
]

CSV_HEADER = (
    "imageId",
    "filename",
    "starRating",
    "colorLabel",
    "title",
    "description",
    "tags",
    "error",
    "provider",
    "model",
    "issues",
    "group",
    "bestInGroup",
)

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_XMP = "http://ns.adobe.com/xap/1.0/"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_XML = "http://www.w3.org/XML/1998/namespace"
NS_LR = "http://ns.adobe.com/lightroom/1.0/"
_PREFIXES = {"x": NS_X, "rdf": NS_RDF, "xmp": NS_XMP, "dc": NS_DC, "lr": NS_LR}
REJECTED = -1  # xmp:Rating that Lightroom and Bridge read as "rejected"
BURST_KEYWORD = "kullbatch|burst|"  # + the group: lr:hierarchicalSubject of a burst's frames
for _prefix, _uri in _PREFIXES.items():
    ET.register_namespace(_prefix, _uri)

_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_END = '\n<?xpacket end="w"?>\n'
# Characters XML 1.0 forbids (controls, lone surrogates, U+FFFE/FFFF): a model may emit them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class SidecarError(ValueError):
    """An existing sidecar is not valid XMP; it is left untouched rather than overwritten."""


# --- JSON, JSON Lines, CSV -------------------------------------------------------------------


def result_object(item: ItemRecord) -> dict[str, Any]:
    """One image's entry in `results`: its rating, its error, or that it is still pending."""
    head: dict[str, Any] = {"imageId": item.image.id, "filename": item.image.filename}
    if item.state is ItemState.RATED and item.rating is not None:
        return (
            head
            | item.rating.model_dump()
            | {"provider": item.provider, "model": item.model}
            | {"group": item.group, "bestInGroup": item.best_in_group}
        )
    if item.state is ItemState.FAILED:
        return head | {"error": item.error or "failed"}
    return head | {"status": ItemState.PENDING.value}


def _document_head(status: JobStatus) -> dict[str, Any]:
    return {"jobId": status.jobId}


def _document_tail(status: JobStatus) -> dict[str, Any]:
    return {
        "totalImages": status.totalImages,
        "processedImages": status.processedImages,
        "failedImages": status.failedImages,
        "completedAt": status.completedAt,
    }


def results_document(status: JobStatus, items: Iterable[ItemRecord]) -> dict[str, Any]:
    """The results object of DESIGN.md (GET /api/batch/results/:jobId, `results --format json`)."""
    results = [result_object(item) for item in items]
    return _document_head(status) | {"results": results} | _document_tail(status)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def write_json(status: JobStatus, items: Iterable[ItemRecord], out: TextIO) -> None:
    """The results document, one image per line, streamed; equal to `results_document`."""
    out.write("{\n")
    out.writelines(f"  {_dumps(k)}: {_dumps(v)},\n" for k, v in _document_head(status).items())
    out.write('  "results": [')
    empty = True
    for item in items:
        out.write("\n    " if empty else ",\n    ")
        out.write(_dumps(result_object(item)))
        empty = False
    out.write("]" if empty else "\n  ]")
    out.writelines(f",\n  {_dumps(k)}: {_dumps(v)}" for k, v in _document_tail(status).items())
    out.write("\n}\n")


def write_jsonl(status: JobStatus, items: Iterable[ItemRecord], out: TextIO) -> None:
    """One result object per line, in manifest order (the job's fields are in `status --json`)."""
    del status  # the same signature as the other writers; each line stands alone
    for item in items:
        out.write(_dumps(result_object(item)))
        out.write("\n")


def _csv_row(item: ItemRecord) -> tuple[object, ...]:
    head = (item.image.id, item.image.filename)
    if item.state is ItemState.RATED and item.rating is not None:
        rating = item.rating
        tags = ";".join(rating.tags)
        return (
            *head,
            rating.starRating,
            rating.colorLabel,
            rating.title,
            rating.description,
            tags,
            "",
            item.provider or "",
            item.model or "",
            ";".join(rating.issues),
            item.group or "",
            "true" if item.best_in_group else "false",
        )
    if item.state is ItemState.FAILED:
        return (*head, "", "", "", "", "", item.error or "failed", "", "", "", "", "")
    return (*head, "", "", "", "", "", "", "", "", "", "", "")


def write_csv(status: JobStatus, items: Iterable[ItemRecord], out: TextIO) -> None:
    """One row per image in manifest order, tags joined by `;`; open `out` with newline=""."""
    del status
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    writer.writerows(_csv_row(item) for item in items)


# --- XMP sidecars ----------------------------------------------------------------------------


def _claim_key(path: Path) -> str:
    return os.path.abspath(path).casefold()  # noqa: PTH100  (no filesystem access, unlike resolve)


def _alternatives(image: Path, folder: Path) -> Iterator[Path]:
    yield folder / f"{image.name}.xmp"
    number = 2
    while True:
        yield folder / f"{image.stem}_{number}.xmp"
        number += 1


def xmp_targets(items: Iterable[ItemRecord], out_dir: Path | None) -> list[tuple[ItemRecord, Path]]:
    """Each rated local image with its sidecar path, collisions resolved in manifest order."""
    wanted: list[tuple[ItemRecord, Path, Path]] = []
    for item in items:
        image = item.image.path
        if item.state is ItemState.RATED and item.rating is not None and image is not None:
            folder = image.parent if out_dir is None else out_dir
            wanted.append((item, image, folder / f"{image.stem}.xmp"))
    claimed: set[str] = set()
    natural: list[bool] = []
    for _, _, target in wanted:  # first pass: every natural name goes to its first claimant
        key = _claim_key(target)
        natural.append(key not in claimed)
        claimed.add(key)
    targets: list[tuple[ItemRecord, Path]] = []
    for (item, image, natural_target), is_first in zip(wanted, natural, strict=True):
        target = natural_target
        if not is_first:
            folder = natural_target.parent
            target = next(p for p in _alternatives(image, folder) if _claim_key(p) not in claimed)
            claimed.add(_claim_key(target))
        targets.append((item, target))
    return targets


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _load_packet(target: Path) -> ET.Element | None:
    """The existing sidecar's x:xmpmeta, or None when there is none yet."""
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SidecarError(f"{target}: cannot read the existing sidecar: {exc}") from exc
    try:  # bytes, so that expat honours a BOM or an encoding declaration
        root = ET.fromstring(data)  # noqa: S314  (stdlib expat expands no external entities)
    except ET.ParseError as exc:
        raise SidecarError(f"{target}: the existing sidecar is not valid XML: {exc}") from exc
    if root.tag == _q(NS_RDF, "RDF"):  # a bare rdf:RDF sidecar: wrap it
        wrapper = ET.Element(_q(NS_X, "xmpmeta"))
        wrapper.append(root)
        root = wrapper
    if root.tag != _q(NS_X, "xmpmeta") or root.find(_q(NS_RDF, "RDF")) is None:
        raise SidecarError(f"{target}: the existing sidecar is not an XMP packet")
    _keep_prefixes(data)
    return root


def _keep_prefixes(data: bytes) -> None:
    """Serialise the sidecar's own prefixes (crs:, lr: …) back, rather than ns0:, ns1: …

    ElementTree keeps prefixes in one process-wide table; our four namespaces keep ours.
    """
    events = ET.iterparse(io.BytesIO(data), events=("start-ns",))  # noqa: S314  (parsed above)
    for _, (prefix, uri) in events:
        if prefix and uri not in _PREFIXES.values() and prefix not in _PREFIXES:
            with contextlib.suppress(ValueError):  # prefixes like ns1 are reserved
                ET.register_namespace(prefix, uri)


_OWNED = (_q(NS_XMP, "Rating"), _q(NS_XMP, "Label"))
_OWNED_DC = tuple(_q(NS_DC, name) for name in ("title", "description", "subject"))


def _description(root: ET.Element) -> ET.Element:
    """The first rdf:Description, after removing our properties from every Description."""
    rdf = root.find(_q(NS_RDF, "RDF"))
    assert rdf is not None  # checked by _load_packet
    descriptions = rdf.findall(_q(NS_RDF, "Description"))
    for description in descriptions:
        for name in (*_OWNED, *_OWNED_DC):
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


def _stars(item: ItemRecord, reject_duplicates: bool) -> int:
    """The photo's stars; -1 (rejected) for a burst's other frames when asked."""
    assert item.rating is not None
    if reject_duplicates and item.group is not None and not item.best_in_group:
        return REJECTED
    return item.rating.starRating


def _merge_burst(root: ET.Element, description: ET.Element, group: str | None) -> None:
    """Our burst keyword replaces an earlier one; the sidecar's other hierarchical ones stay."""
    name = _q(NS_LR, "hierarchicalSubject")
    kept: list[str] = []
    for parent in list(root.iter()):
        for holder in parent.findall(name):
            kept += [li.text or "" for li in holder.iter(_q(NS_RDF, "li"))]
            parent.remove(holder)
    values = [value for value in kept if not value.startswith(BURST_KEYWORD)]
    values += [BURST_KEYWORD + group] if group else []
    if values:
        _container(description, name, "Bag", values)


def _merged_text(root: ET.Element, item: ItemRecord, reject_duplicates: bool) -> str:
    """An existing packet with our properties replaced (ElementTree; the slow, rare path)."""
    rating = item.rating
    assert rating is not None
    description = _description(root)
    ET.SubElement(description, _q(NS_XMP, "Rating")).text = str(_stars(item, reject_duplicates))
    if rating.colorLabel != "none":
        ET.SubElement(description, _q(NS_XMP, "Label")).text = rating.colorLabel.capitalize()
    _container(description, _q(NS_DC, "title"), "Alt", [rating.title])
    _container(description, _q(NS_DC, "description"), "Alt", [rating.description])
    _container(description, _q(NS_DC, "subject"), "Bag", keywords(rating))
    _merge_burst(root, description, item.group)
    ET.indent(root, space=" ")
    return _XPACKET_BEGIN + ET.tostring(root, encoding="unicode") + _XPACKET_END


def keywords(rating: Rating) -> list[str]:
    """dc:subject: the model's tags, then the issues it found (each once), for keyword filters."""
    return list(dict.fromkeys([*rating.tags, *rating.issues]))


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


def _fresh_text(item: ItemRecord, reject_duplicates: bool) -> str:
    """A new packet from a template: byte for byte what `_merged_text` gives for no sidecar."""
    rating = item.rating
    assert rating is not None
    label = rating.colorLabel
    burst = [BURST_KEYWORD + item.group] if item.group else []
    label_line = "" if label == "none" else f"   <xmp:Label>{label.capitalize()}</xmp:Label>\n"
    return "".join(
        (
            _XPACKET_BEGIN,
            f'<x:xmpmeta xmlns:dc="{NS_DC}"{_lr_declaration(burst)} xmlns:rdf="{NS_RDF}" ',
            f'xmlns:x="{NS_X}" xmlns:xmp="{NS_XMP}">\n <rdf:RDF>\n',
            '  <rdf:Description rdf:about="">\n',
            f"   <xmp:Rating>{_stars(item, reject_duplicates)}</xmp:Rating>\n",
            label_line,
            _fresh_container("dc:title", "Alt", [rating.title]),
            _fresh_container("dc:description", "Alt", [rating.description]),
            _fresh_container("dc:subject", "Bag", keywords(rating)),
            _fresh_container("lr:hierarchicalSubject", "Bag", burst) if burst else "",
            "  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>",
            _XPACKET_END,
        )
    )


def _lr_declaration(burst: list[str]) -> str:
    return f' xmlns:lr="{NS_LR}"' if burst else ""


def sidecar_text(item: ItemRecord, target: Path, *, reject_duplicates: bool = False) -> str:
    """The sidecar for one rated image: the existing one updated, or a new packet."""
    assert item.rating is not None
    root = _load_packet(target)
    if root is None:
        return _fresh_text(item, reject_duplicates)
    return _merged_text(root, item, reject_duplicates)


def _write_atomically(target: Path, text: str) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as for any new file (mkstemp gives 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_xmp(
    items: Iterable[ItemRecord], out_dir: Path | None, *, reject_duplicates: bool = False
) -> list[Path]:
    """One sidecar per rated local image, beside it or in `out_dir`; returns the paths written.

    With `reject_duplicates`, a burst's frames other than its best are written rejected (-1).

    Raises SidecarError for an existing sidecar that is not XMP (sidecars before it are written).
    """
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for item, target in xmp_targets(items, out_dir):
        _write_atomically(target, sidecar_text(item, target, reject_duplicates=reject_duplicates))
        written.append(target)
    return written


@dataclass(frozen=True, slots=True)
class Written:
    """What `write_results` wrote: a count and where (None for stdout; files for XMP)."""

    count: int
    target: Path | None
    sidecars: tuple[Path, ...] = ()


_TEXT_WRITERS = {"json": write_json, "jsonl": write_jsonl, "csv": write_csv}


def write_results(
    fmt: str,
    status: JobStatus,
    items: list[ItemRecord],
    output: Path | None,
    *,
    reject_duplicates: bool = False,
) -> Written:
    """Any format to stdout, a file (written whole, then renamed into place) or XMP sidecars."""
    if fmt == "xmp":
        sidecars = write_xmp(items, output, reject_duplicates=reject_duplicates)
        return Written(len(sidecars), output, tuple(sidecars))
    writer = _TEXT_WRITERS[fmt]
    if output is None:
        writer(status, items, sys.stdout)
        sys.stdout.flush()
        return Written(len(items), None)
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO(newline="")
    writer(status, items, buffer)
    _write_atomically(output, buffer.getvalue())
    return Written(len(items), output)
