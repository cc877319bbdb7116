"""The ``[[windows]]`` of a spec: windows, their metrics and sketches, and their checks."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from streaming.errors import SpecError

NUMERIC_TYPES = ("long", "int", "double")
SKETCH_KINDS = ("hll", "cms", "bloom", "minhash", "quantiles", "theta")
#: byte formats a sketch can be stored in: this package's, or Apache DataSketches' images
SKETCH_FORMATS = ("native", "datasketches")
METRIC_FUNCS = ("count", "sum", "min", "max", "avg")
#: what a window, sketch or field name may be
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def column_part(field: str) -> str:
    """A field's part of its metric columns' names: the path with ``_`` for ``.``
    (``payload.size`` in ``sum_payload_size``); the spec refuses two fields that share one."""
    return field.replace(".", "_")


@dataclass(frozen=True)
class MetricSpec:
    func: Literal["count", "sum", "min", "max", "avg"]
    field: str | None = None

    @property
    def column(self) -> str:
        """The table column: ``count``, ``sum_amount``; a path's dots become ``_``
        (``sum(payload.size)`` is ``sum_payload_size``), so SQL needs no quoting."""
        if self.field is None:
            return self.func
        return f"{self.func}_{column_part(self.field)}"

    @property
    def text(self) -> str:
        return self.func if self.field is None else f"{self.func}({self.field})"


@dataclass(frozen=True)
class SketchSpec:
    name: str
    kind: Literal["hll", "cms", "bloom", "minhash", "quantiles", "theta"]
    field: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def param_dict(self) -> dict[str, Any]:
        """The sketch's constructor kwargs (the byte format is not one of them)."""
        return {k: v for k, v in self.params if k != "format"}

    @property
    def native(self) -> bool:
        """Whether the bytes are this package's own format (not DataSketches images)."""
        return self.kind != "theta" and dict(self.params).get("format", "native") == "native"

    @property
    def sketch_class(self) -> type:
        """The ``sketches`` class of this kind; :attr:`param_dict` is its constructor's kwargs."""
        import sketches

        if self.kind == "hll" and not self.native:
            return sketches.DataSketchesHLL
        return {"hll": sketches.HyperLogLog, "cms": sketches.CountMinSketch,
                "bloom": sketches.BloomFilter, "minhash": sketches.MinHashSketch,
                "quantiles": sketches.QuantileSketch, "theta": sketches.ThetaSketch}[self.kind]

    def new(self):
        """An empty sketch of this kind and parameters."""
        return self.sketch_class(**self.param_dict)

    def read(self, data: Any) -> Any:
        """A stored sketch of this spec, from its bytes. A Theta image does not say its k,
        so it is read into an empty sketch of the spec's: merges keep the k smallest."""
        import sketches

        sketch = sketches.from_bytes(data)
        return self.new().merge(sketch) if self.kind == "theta" else sketch


@dataclass(frozen=True)
class WindowSpec:
    name: str
    size_s: int
    slide_s: int
    group_by: tuple[str, ...] = ()
    metrics: tuple[MetricSpec, ...] = (MetricSpec("count"),)
    sketches: tuple[SketchSpec, ...] = ()

    @property
    def sliding(self) -> bool:
        return self.slide_s != self.size_s


class WindowChecks:
    """The checks of one ``[[windows]]`` table and its ``[[windows.sketches]]``.

    Mixed into the spec's validator, which reads the typed values
    (:meth:`table`, :meth:`get`, :meth:`duration`) and words the errors (:meth:`fail`).
    """

    def fail(self, key: str, message: str) -> SpecError:
        raise NotImplementedError

    def table(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        raise NotImplementedError

    def get(self, tbl: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...],
            default: Any = ..., *, check=None, what: str = "") -> Any:
        raise NotImplementedError

    def duration(self, tbl: dict[str, Any], key: str, path: str, default: Any = ...,
                 *, positive: bool = True) -> float:
        raise NotImplementedError

    def window(self, raw: Any, key: str, events: Any) -> WindowSpec:
        t = self.table(raw, key, ("name", "size", "slide", "group_by", "metrics", "sketches"))
        name = self.get(t, "name", f"{key}.name", str,
                        check=lambda v: None if NAME.match(v) else "must be an identifier")
        size = self.duration(t, "size", f"{key}.size")
        slide = self.duration(t, "slide", f"{key}.slide", f"{size} seconds")
        if size != int(size) or slide != int(slide):
            raise self.fail(f"{key}.size", "window size and slide must be whole seconds")
        if slide > size:
            raise self.fail(f"{key}.slide", "must not be longer than the window size")
        if int(size) % int(slide):
            raise self.fail(f"{key}.slide", "the window size must be a multiple of the slide")
        if size / slide > 100:
            raise self.fail(f"{key}.slide", "more than 100 overlapping windows per event")
        fields = dict(events.fields)
        group_by = self.get(t, "group_by", f"{key}.group_by", list, [])
        for i, g in enumerate(group_by):
            if g not in fields:
                raise self.fail(f"{key}.group_by", f"unknown field {g!r}; declare it in "
                                "[events.fields]")
            if fields[g].startswith("list<"):
                raise self.fail(f"{key}.group_by", f"{g} is a {fields[g]}: a list field "
                                "feeds sketches; grouping by one is not defined")
            if group_by.index(g) != i:
                raise self.fail(f"{key}.group_by", f"field {g!r} listed twice")
        metrics_raw = self.get(t, "metrics", f"{key}.metrics", list, ["count"])
        metrics = []
        for text in metrics_raw:
            m = re.fullmatch(r"\s*([a-z_]+)\s*(?:\(\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\))?\s*",
                             str(text))
            if not m or m.group(1) not in METRIC_FUNCS:
                raise self.fail(f"{key}.metrics", f"unknown metric {text!r}; use count, sum(f), "
                                "min(f), max(f), avg(f)")
            func, fld = m.group(1), m.group(2)
            if func == "count":
                if fld:
                    raise self.fail(f"{key}.metrics", "count takes no field")
            else:
                if not fld:
                    raise self.fail(f"{key}.metrics", f"{func} needs a field: {func}(field)")
                if fld not in fields:
                    raise self.fail(f"{key}.metrics", f"unknown field {fld!r} in {text!r}")
                if fields[fld].startswith("list<"):
                    raise self.fail(f"{key}.metrics",
                                    f"{func}({fld}): {fld} is a {fields[fld]}, and metrics over "
                                    "lists are not defined; give it to a sketch (hll, cms, "
                                    "bloom, minhash, quantiles)")
                if fields[fld] not in NUMERIC_TYPES:
                    raise self.fail(f"{key}.metrics",
                                    f"{func}({fld}) needs a numeric field; {fld} is {fields[fld]}")
            spec = MetricSpec(func, fld)  # type: ignore[arg-type]
            if spec in metrics:
                raise self.fail(f"{key}.metrics", f"metric {text!r} listed twice")
            metrics.append(spec)
        sketches_raw = self.get(t, "sketches", f"{key}.sketches", list, [])
        sketches = tuple(self.sketch(s, f"{key}.sketches[{i}]", fields)
                         for i, s in enumerate(sketches_raw))
        names = [s.name for s in sketches]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise self.fail(f"{key}.sketches[{i}].name", f"duplicate sketch name {n!r}")
        return WindowSpec(name, int(size), int(slide), tuple(group_by), tuple(metrics), sketches)

    def sketch(self, raw: Any, key: str, fields: dict[str, str]) -> SketchSpec:
        common = ("name", "kind", "field", "seed")
        per_kind = {"hll": ("precision", "format"), "theta": ("lg_k",),
                    "cms": ("epsilon", "delta", "width", "depth", "top_k"),
                    "bloom": ("capacity", "error_rate"), "minhash": ("num_perm",),
                    "quantiles": ("relative_accuracy", "mapping")}
        if not isinstance(raw, dict):
            raise self.fail(key, "must be a table")
        kind = self.get(raw, "kind", f"{key}.kind", str,
                        check=lambda v: None if v in SKETCH_KINDS
                        else f"unknown sketch kind; use one of {', '.join(SKETCH_KINDS)}")
        t = self.table(raw, key, common + per_kind[kind])
        name = self.get(t, "name", f"{key}.name", str,
                        check=lambda v: None if NAME.match(v) else "must be an identifier")
        fld = self.get(t, "field", f"{key}.field", str,
                       check=lambda v: None if v in fields
                       else f"unknown field {v!r}; declare it in [events.fields]")
        if kind == "quantiles":
            # values are bucketed by magnitude, not hashed: no seed
            if "seed" in t:
                raise self.fail(f"{key}.seed", "a quantiles sketch hashes nothing; drop seed")
            if fields[fld] not in ("double", "long", "int", "list<double>", "list<long>",
                                   "list<int>"):
                raise self.fail(f"{key}.field", f"quantiles need a numeric field; {fld} is "
                                f"{fields[fld]}")
            acc = self.get(t, "relative_accuracy", f"{key}.relative_accuracy", (int, float),
                           0.01, check=lambda v: None if 1e-4 <= v <= 0.5
                           else "must be in [0.0001, 0.5]")
            mapping = self.get(t, "mapping", f"{key}.mapping", str, "log",
                               check=lambda v: None if v in ("log", "cells")
                               else 'must be "log" or "cells"')
            params = (("relative_accuracy", float(acc)),)
            if mapping != "log":  # the default stays out: fingerprints of existing specs hold
                params += (("mapping", mapping),)
            return SketchSpec(name, kind, fld, params)
        if kind == "theta" or (kind == "hll" and t.get("format") == "datasketches"):
            return self.datasketches(t, key, name, kind, fld)
        if t.get("format", "native") != "native":
            raise self.fail(f"{key}.format", f"unknown format {t['format']!r}; use "
                            + " or ".join(f'"{f}"' for f in SKETCH_FORMATS))
        seed = self.get(t, "seed", f"{key}.seed", int, 0,
                        check=lambda v: None if 0 <= v < 2**32 else "must be in 0..2^32-1")
        params: dict[str, Any] = {"seed": seed}
        if kind == "hll":
            params["precision"] = self.get(t, "precision", f"{key}.precision", int, 14,
                                           check=lambda v: None if 4 <= v <= 18
                                           else "must be between 4 and 18")
        elif kind == "cms":
            has_eps = "epsilon" in t or "delta" in t
            has_wd = "width" in t or "depth" in t
            if has_eps and has_wd:
                raise self.fail(f"{key}.width", "give either epsilon/delta or width/depth")
            if has_wd:
                width = self.get(t, "width", f"{key}.width", int,
                                 check=lambda v: None if 1 <= v <= 1 << 24 else
                                 "must be in 1..16777216")
                depth = self.get(t, "depth", f"{key}.depth", int,
                                 check=lambda v: None if 1 <= v <= 32 else "must be in 1..32")
            else:
                eps = self.get(t, "epsilon", f"{key}.epsilon", (int, float), 0.001,
                               check=lambda v: None if 1e-7 <= v < 1 else
                               "must be in [1e-7, 1)")
                dlt = self.get(t, "delta", f"{key}.delta", (int, float), 0.01,
                               check=lambda v: None if 1e-12 <= v < 1 else
                               "must be in [1e-12, 1)")
                width = math.ceil(math.e / eps)
                depth = max(1, math.ceil(math.log(1 / dlt)))
            if width * depth * 8 > 256 << 20:
                raise self.fail(f"{key}.epsilon" if not has_wd else f"{key}.width",
                                f"a {width}x{depth} sketch needs more than 256 MiB per window "
                                "and group; loosen epsilon/delta")
            params.update(width=width, depth=depth,
                          top_k=self.get(t, "top_k", f"{key}.top_k", int, 10,
                                         check=lambda v: None if 0 <= v <= 1000
                                         else "must be in 0..1000"))
        elif kind == "bloom":
            cap = self.get(t, "capacity", f"{key}.capacity", int,
                           check=lambda v: None if 1 <= v <= 10**9 else "must be in 1..1e9")
            rate = self.get(t, "error_rate", f"{key}.error_rate", (int, float), 0.01,
                            check=lambda v: None if 1e-9 <= v < 1 else "must be in [1e-9, 1)")
            bits = -cap * math.log(rate) / math.log(2) ** 2
            if bits / 8 > 512 << 20:
                raise self.fail(f"{key}.capacity", "the filter would need more than 512 MiB")
            params.update(capacity=cap, error_rate=float(rate))
        else:
            params["num_perm"] = self.get(t, "num_perm", f"{key}.num_perm", int, 128,
                                          check=lambda v: None if 8 <= v <= 1024
                                          else "must be in 8..1024")
        return SketchSpec(name, kind, fld, tuple(sorted(params.items())))  # type: ignore[arg-type]

    def datasketches(self, t: dict[str, Any], key: str, name: str, kind: str,
                     fld: str) -> SketchSpec:
        """A sketch stored as an Apache DataSketches image: an HLL (``format =
        "datasketches"``) or a Theta sketch. Both hash with DataSketches' fixed seed, as
        Spark SQL, Druid and Pinot do, so a ``seed`` would make them unreadable there."""
        if "seed" in t:
            raise self.fail(f"{key}.seed", "DataSketches images use DataSketches' own seed "
                            "(9001), as Spark SQL and Druid do; drop seed")
        if kind == "hll":
            precision = self.get(t, "precision", f"{key}.precision", int, 12,
                                 check=lambda v: None if 4 <= v <= 21
                                 else "must be between 4 and 21")
            params = (("format", "datasketches"), ("precision", precision))
        else:
            lg_k = self.get(t, "lg_k", f"{key}.lg_k", int, 12,
                            check=lambda v: None if 4 <= v <= 26 else "must be between 4 and 26")
            params = (("lg_k", lg_k),)
        return SketchSpec(name, kind, fld, params)  # type: ignore[arg-type]
