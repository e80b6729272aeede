"""How each provider turns a photo into input tokens, for the price table and the dry run.

- `pixels`    Anthropic: ceil(w*h / pixels_per_token) after the long edge fits max_edge,
              at most max_tokens.
- `patches`   OpenAI mini/nano models: 32 px patches covering the photo (at most max_patches,
              the photo shrunk to fit), times the model's multiplier.
- `grid`      OpenAI's tiles (fit in 2048, short side 768, 512 px tiles: 85 + 170 per tile),
              Gemini 2.5 (768 px tiles, 258 each), xAI (448 px tiles, 256 each, one extra, 6 at
              most): base + per_tile * tiles.
- `fixed`     the same count for every photo (Gemini 3's media resolution; local: 0).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FixedRule", "GridRule", "ImageRule", "PatchRule", "PixelRule"]

_EPSILON = 1e-9  # 33.000000001 patches is 33 patches, not 34


def _ceil(value: float) -> int:
    return math.ceil(value - _EPSILON)


def _fit(width: float, height: float, edge: int | None) -> tuple[float, float]:
    """The size after the long edge is brought down to `edge` (never enlarged)."""
    if edge is None or max(width, height) <= edge:
        return width, height
    scale = edge / max(width, height)
    return width * scale, height * scale


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PixelRule(_Rule):
    """Tokens proportional to the area: Anthropic's width*height/750."""

    rule: Literal["pixels"]
    pixels_per_token: float = Field(gt=0)
    max_edge: int | None = None
    max_tokens: int | None = None

    def tokens(self, width: int, height: int) -> int:
        w, h = _fit(width, height, self.max_edge)
        count = _ceil(w * h / self.pixels_per_token)
        return count if self.max_tokens is None else min(count, self.max_tokens)


class PatchRule(_Rule):
    """OpenAI's patch rule: 32 px patches, at most 1536 (the photo shrunk), times a multiplier."""

    rule: Literal["patches"]
    patch: int = Field(default=32, gt=0)
    max_patches: int = Field(default=1536, gt=0)
    multiplier: float = Field(default=1.0, gt=0)

    def tokens(self, width: int, height: int) -> int:
        size = self.patch
        patches = _ceil(width / size) * _ceil(height / size)
        if patches > self.max_patches:
            shrink = math.sqrt(size * size * self.max_patches / (width * height))
            across, down = width * shrink / size, height * shrink / size
            shrink *= min(math.floor(across) / across, math.floor(down) / down)
            patches = _ceil(width * shrink / size) * _ceil(height * shrink / size)
            patches = min(patches, self.max_patches)
        return _ceil(patches * self.multiplier)


class GridRule(_Rule):
    """Tiles of `tile` px covering the photo after fitting: base + per_tile * tiles."""

    rule: Literal["grid"]
    tile: int = Field(gt=0)
    per_tile: int = Field(ge=0)
    base: int = Field(default=0, ge=0)
    fit: int | None = None  # the long edge is first brought down to this
    short_side: int | None = None  # then the short edge to this
    max_tiles: int | None = None

    def tokens(self, width: int, height: int) -> int:
        w, h = _fit(width, height, self.fit)
        if self.short_side is not None and min(w, h) > self.short_side:
            scale = self.short_side / min(w, h)
            w, h = w * scale, h * scale
        tiles = _ceil(w / self.tile) * _ceil(h / self.tile)
        if self.max_tiles is not None:
            tiles = min(tiles, self.max_tiles)
        return self.base + self.per_tile * tiles


class FixedRule(_Rule):
    """The same count for every photo, whatever its size."""

    rule: Literal["fixed"]
    tokens_each: int = Field(alias="tokens", ge=0)

    def tokens(self, width: int, height: int) -> int:
        del width, height
        return self.tokens_each


ImageRule = Annotated[PixelRule | PatchRule | GridRule | FixedRule, Field(discriminator="rule")]
