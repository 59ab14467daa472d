"""The baseline file: per-feature bins and counts learned from training data (`kldrift baseline`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from kldrift.exceptions import BaselineError as BaselineError
from kldrift.schemas.config import check_categories, check_edges

BASELINE_SCHEMA_VERSION = 1


_ADDED_FIELDS = ("of", "learned_with")
"""FeatureBaseline fields added after baselines were first written: left out of the file and the
id when unset, so every baseline written before keeps its id and older kldrift reads new files
that use neither."""


class FeatureBaseline(BaseModel):
    """One feature's bins and the training data's count in each bin."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: Literal["numeric", "categorical", "joint"]
    edges: list[float] | None = None
    categories: list[str] | None = None
    of: list[str] | None = Field(
        default=None, description="joint: the two features whose bins it pairs, in cell order"
    )
    counts: list[int] = Field(description="count per bin, in bin order")
    missing: int = Field(default=0, ge=0)
    invalid: int = Field(default=0, ge=0)
    learned_with: dict[Literal["bins", "top_k"], int] | None = Field(
        default=None,
        description="what the config asked when the bins were learned ({bins: N} or {top_k: K}); "
        "absent where the config fixed them, and in baselines built before it was recorded",
    )

    @model_serializer(mode="wrap")
    def _without_unset_added_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Fields added after baselines were first written (`of`, `learned_with`) are not written
        when unset: a baseline without joints or learned bins reads as before they existed (older
        kldrift reads it) and hashes to the same id."""
        dumped: dict[str, Any] = handler(self)
        for name in _ADDED_FIELDS:
            if dumped.get(name, ...) is None:
                del dumped[name]
        return dumped

    @model_validator(mode="after")
    def _bins_match_counts(self) -> FeatureBaseline:
        if self.kind == "joint":
            if self.of is None or len(self.of) != 2 or self.edges is not None or self.categories:
                raise ValueError(f"feature {self.name!r}: a joint baseline has `of` (2 names) only")
            _check_counts(self.name, self.counts)
            return self  # its number of cells is checked by Baseline, which holds its parts
        if self.of is not None:
            raise ValueError(f"feature {self.name!r}: only a joint feature has `of`")
        if self.kind == "numeric":
            if self.edges is None or self.categories is not None:
                raise ValueError(f"feature {self.name!r}: a numeric baseline has edges only")
            _checked(self.name, check_edges, self.edges)
            expected = len(self.edges) + 1
        else:
            if self.categories is None or self.edges is not None:
                raise ValueError(
                    f"feature {self.name!r}: a categorical baseline has categories only"
                )
            _checked(self.name, check_categories, self.categories)
            expected = len(self.categories) + 1
        if len(self.counts) != expected:
            raise ValueError(
                f"feature {self.name!r}: {len(self.counts)} counts for {expected} bins"
            )
        _check_counts(self.name, self.counts)
        return self

    @model_validator(mode="after")
    def _learned_bins_fit_what_was_asked(self) -> FeatureBaseline:
        _check_learned_with(self)
        return self


def _check_learned_with(feature: FeatureBaseline) -> None:
    """A learned feature's record names its kind's setting, and the learned bins fit in it (ties
    can collapse quantile edges, so fewer bins than asked is consistent)."""
    if feature.learned_with is None:
        return
    setting: Literal["bins", "top_k"] = "bins" if feature.kind == "numeric" else "top_k"
    asked = feature.learned_with.get(setting)
    if asked is None or len(feature.learned_with) != 1 or asked < 1:
        raise ValueError(
            f"feature {feature.name!r}: learned_with of a {feature.kind} feature is "
            f"{{{setting}: N}} with N >= 1"
        )
    if feature.kind == "numeric":
        learned, unit = len(feature.counts), "bins"
    else:
        learned, unit = len(feature.counts) - 1, "categories"
    if learned > asked:
        raise ValueError(
            f"feature {feature.name!r}: {learned} learned {unit}, more than learned_with's "
            f"{setting}: {asked}"
        )


def _check_counts(name: str, counts: list[int]) -> None:
    if any(c < 0 for c in counts):
        raise ValueError(f"feature {name!r}: counts cannot be negative")
    if sum(counts) == 0:
        raise ValueError(f"feature {name!r}: the baseline has no binned values")


def _checked(name: str, check: Callable[[Any], Any], bins: Any) -> None:
    try:
        check(bins)
    except ValueError as err:
        raise ValueError(f"feature {name!r}: {err}") from None


class Baseline(BaseModel):
    """A whole baseline; `id` is the sha256 of its canonical content (features and schema version)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = BASELINE_SCHEMA_VERSION
    id: str
    created_at: str
    source: str
    features: list[FeatureBaseline] = Field(min_length=1)

    @model_validator(mode="after")
    def _joints_match_parts(self) -> Baseline:
        plain = {f.name: f for f in self.features if f.kind != "joint"}
        for joint in self.features:
            if joint.kind != "joint":
                continue
            assert joint.of is not None
            missing = [name for name in joint.of if name not in plain]
            if missing:
                raise ValueError(
                    f"feature {joint.name!r}: joint of {missing[0]!r}, which the baseline lacks"
                )
            cells = len(plain[joint.of[0]].counts) * len(plain[joint.of[1]].counts)
            if len(joint.counts) != cells:
                raise ValueError(
                    f"feature {joint.name!r}: {len(joint.counts)} counts for {cells} joint cells"
                )
        return self

    @model_validator(mode="after")
    def _id_matches_content(self) -> Baseline:
        expected = content_id(self.features)
        if self.id != expected:
            raise ValueError(
                f"baseline id {self.id[:12]}... does not match its content ({expected[:12]}...): "
                "the file was edited; rebuild it with `kldrift baseline`"
            )
        return self

    def feature(self, name: str) -> FeatureBaseline:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    @classmethod
    def create(cls, features: list[FeatureBaseline], *, source: str, created_at: str) -> Baseline:
        return cls(id=content_id(features), created_at=created_at, source=source, features=features)


def content_id(features: list[FeatureBaseline]) -> str:
    canonical = json.dumps(
        {
            "schema_version": BASELINE_SCHEMA_VERSION,
            "features": [f.model_dump(mode="json") for f in features],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_baseline(path: str | Path) -> Baseline:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise BaselineError(f"cannot read baseline {path}: {err.strerror}") from None
    return parse_baseline(text, str(path))


def parse_baseline(text: str | bytes, source: str) -> Baseline:
    try:
        return Baseline.model_validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        location = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        raise BaselineError(f"{source}: {location}: {message}") from None
