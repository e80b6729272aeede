"""Fallback: the providers a job may use, in order, and which of them still take photos.

`--fallback P[:MODEL]` adds providers after the job's own. A photo still failing on one after
`--fallback-after` of retrying, or refused by it at once (a refusal, a content-policy block:
a verdict another model may not share), goes to the next; a provider's fatal error (bad key,
no credit, unknown model) takes it out of the chain for the rest of the job. Each provider
keeps its own rate-limit gate: a 429 from one never holds another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kullbatch.providers.base import Provider
    from kullbatch.run.ratelimit import Gate


@dataclass(slots=True, eq=False)
class Link:
    """One provider of the chain, with its gate; `down` says why it stopped taking photos."""

    provider: Provider
    gate: Gate
    owns_gate: bool = False
    down: str | None = None


class Chain:
    """The job's providers in order; photos go to the first one still up."""

    def __init__(self, links: Sequence[Link]) -> None:
        self.links = list(links)
        self.single = len(self.links) == 1  # no fallback: the engine's fast path
        self.head: Link | None = self.links[0] if self.links else None  # the first still up

    def first(self) -> Link | None:
        return next((link for link in self.links if link.down is None), None)

    def after(self, link: Link) -> Link | None:
        """The next provider still up after `link`, if any."""
        index = self.links.index(link)
        return next((later for later in self.links[index + 1 :] if later.down is None), None)

    def take_down(self, link: Link, reason: str) -> bool:
        """Mark `link` down; True the first time (so the switch is announced once)."""
        first_time = link.down is None
        link.down = link.down or reason
        self.head = self.first()
        return first_time
