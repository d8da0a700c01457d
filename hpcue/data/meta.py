"""The schema of meta.json: what a shard directory must say before any of its files is trusted.

meta.json decides which files a run reads and which names ``generate`` writes, so a shard's
``file`` must be a plain shard name (``<split>-NNNNN-of-NNNNN.h5``): no folder, no ``..``, never
absolute, so every path a reader or writer builds from it stays inside the directory. Types are
strict (no "3" for 3, no true for 1): callers read the dict as parsed, not a converted copy.
Keys this schema does not name (grayscale, recipe, source, compression ...) are kept.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FORMAT_VERSION = 1
SPLIT_NAME = re.compile(r"\w+", re.ASCII)
SHARD_FILE = r"{split}-\d{{5}}-of-\d{{5}}\.h5"

Count = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ShardEntry(_Strict):
    file: str
    num_samples: Count
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class SplitEntry(_Strict):
    num_samples: Count
    shards: list[ShardEntry]

    @model_validator(mode="after")
    def _counts_add_up(self) -> SplitEntry:
        held = sum(s.num_samples for s in self.shards)
        if held != self.num_samples:
            raise ValueError(f"num_samples is {self.num_samples} but its shards hold {held}")
        return self


class Meta(_Strict):
    format_version: Annotated[int, Field(ge=FORMAT_VERSION, le=FORMAT_VERSION)]
    dataset: Annotated[str, Field(min_length=1)]
    classes: Annotated[list[str], Field(min_length=2)]
    image_shape: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=3, max_length=3)]
    image_dtype: Literal["uint8"]
    splits: dict[str, SplitEntry]

    @model_validator(mode="after")
    def _consistent(self) -> Meta:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: names repeat ({self.classes[:10]} ...)")
        if self.image_shape[-1] != 3:
            raise ValueError(f"image_shape: {self.image_shape} is not H x W x 3 (RGB)")
        files: set[str] = set()
        for split, entry in self.splits.items():
            if not SPLIT_NAME.fullmatch(split):
                raise ValueError(f"splits: {split!r} is not a split name (letters, digits, _)")
            pattern = re.compile(SHARD_FILE.format(split=re.escape(split)), re.ASCII)
            for i, shard in enumerate(entry.shards):
                where = f"splits.{split}.shards[{i}].file"
                if not pattern.fullmatch(shard.file):
                    raise ValueError(f"{where}: {shard.file!r} is not a shard of this directory "
                                     f"(expected {split}-NNNNN-of-NNNNN.h5, a plain file name)")
                if shard.file in files:
                    raise ValueError(f"{where}: {shard.file!r} is listed twice")
                files.add(shard.file)
        return self


KEYS = ", ".join(Meta.model_fields)


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: Any) -> str:
    where, msg = _where(error["loc"]), error["msg"].removeprefix("Value error, ")
    if not where and error["type"] == "model_type":
        msg = f"expected a JSON object with {KEYS}"
    return f"{where}: {msg}" if where else msg


def meta_problems(data: Any) -> list[str]:
    """What is wrong with a parsed meta.json, one entry per key (empty when it is usable)."""
    try:
        Meta.model_validate(data)
    except ValidationError as exc:
        return [_describe(e) for e in exc.errors(include_url=False)]
    return []
