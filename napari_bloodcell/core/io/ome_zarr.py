"""OME-Zarr folders (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) opened as lazy pyramids, with zarr alone.

The ``multiscales`` metadata (``.zattrs``, or ``zarr.json``'s ``attributes.ome``) is read with the project's
bounded JSON reader before zarr sees the folder, and every value in it is checked: the dataset paths must be plain
relative names that resolve inside the folder (no ``..``, no absolute path, no link leading out), every dataset
must be an array with bounded metadata, and the levels must shrink consistently (:func:`.pyramid.check_levels`).
Only the first multiscale image is opened; time and z axes are read at index 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import BloodcellInputError
from ..untrusted import is_regular_file, load_json
from .pyramid import MAX_LEVELS, Level, Pyramid, check_levels

META_BYTES = 1024 * 1024
"""Zarr metadata files are a few kilobytes; larger ones are refused before they are parsed."""
_DATASET_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}){0,7}")
_AXIS_TYPES = {"space", "time", "channel"}


def is_ome_zarr(path: str | Path) -> bool:
    """A folder with Zarr group metadata (``.zattrs`` or ``zarr.json``); cheap, never raises."""
    path = Path(path)
    try:
        return path.is_dir() and (is_regular_file(path / ".zattrs") or is_regular_file(path / "zarr.json"))
    except OSError:
        return False


def read_multiscales(path: Path) -> tuple[list[str], str | None]:
    """The first multiscale image's dataset paths (full resolution first) and its axes (e.g. ``CYX``; None when
    the metadata names none), checked."""
    if is_regular_file(path / "zarr.json"):
        meta = load_json(path / "zarr.json", META_BYTES)
        attrs = meta.get("attributes", {}) if isinstance(meta, dict) else None
        if isinstance(attrs, dict) and isinstance(attrs.get("ome"), dict):
            attrs = attrs["ome"]
    elif is_regular_file(path / ".zattrs"):
        attrs = load_json(path / ".zattrs", META_BYTES)
    else:
        raise BloodcellInputError("is not an OME-Zarr folder (no .zattrs or zarr.json)", path)
    multiscales = attrs.get("multiscales") if isinstance(attrs, dict) else None
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise BloodcellInputError("is a Zarr folder without OME 'multiscales' metadata; cannot open it as an "
                                  "image", path)
    first = multiscales[0]
    datasets = first.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise BloodcellInputError("OME-Zarr 'multiscales' lists no datasets", path)
    if len(datasets) > MAX_LEVELS:
        raise BloodcellInputError(f"OME-Zarr lists {len(datasets)} levels (at most {MAX_LEVELS})", path)
    paths = [_dataset_path(d, path) for d in datasets]
    return paths, _axes(first.get("axes"), path)


def _dataset_path(entry: Any, folder: Path) -> str:
    raw = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(raw, str) or not _DATASET_PATH.fullmatch(raw) or ".." in raw.split("/"):
        shown = repr(raw)[:80]
        raise BloodcellInputError(f"OME-Zarr dataset path {shown} is not a plain relative name inside the folder",
                                  folder)
    root = folder.resolve()
    resolved = (folder / raw).resolve()
    if root not in resolved.parents:
        raise BloodcellInputError(f"OME-Zarr dataset path {raw!r} leads outside the folder", folder)
    return raw


def _axes(raw: Any, folder: Path) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not 2 <= len(raw) <= 5:
        raise BloodcellInputError("OME-Zarr 'axes' must list 2 to 5 axes", folder)
    names = []
    for axis in raw:
        name = axis.get("name") if isinstance(axis, dict) else axis
        kind = axis.get("type") if isinstance(axis, dict) else None
        if not isinstance(name, str) or len(name) != 1 or name.lower() not in "tczyx":
            raise BloodcellInputError(f"OME-Zarr axis {repr(name)[:40]} is not one of t, c, z, y, x", folder)
        if kind is not None and kind not in _AXIS_TYPES:
            raise BloodcellInputError(f"OME-Zarr axis {name!r} has unknown type {repr(kind)[:40]}", folder)
        names.append(name.upper())
    if len(set(names)) != len(names):
        raise BloodcellInputError(f"OME-Zarr axes {''.join(names)!r} repeat an axis", folder)
    return "".join(names)


def _guess_axes(ndim: int, shape: tuple[int, ...]) -> str:
    """Axes of a pre-0.4 OME-Zarr (no ``axes``): TCZYX order, last ones kept; a last axis of 3 or 4 is RGB(A)."""
    if ndim == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        return "YXC"
    return "TCZYX"[-ndim:]


def _open_array(folder: Path, name: str) -> Any:
    import zarr

    where = folder / name
    metas = [where / m for m in ("zarr.json", ".zarray") if is_regular_file(where / m)]
    if not metas:
        raise BloodcellInputError(f"OME-Zarr dataset {name!r} is listed but holds no array", folder)
    for meta in metas:
        if meta.stat().st_size > META_BYTES:
            raise BloodcellInputError(f"OME-Zarr dataset {name!r} has {meta.name} over 1 MB", folder)
        load_json(meta, META_BYTES)  # NaN, deep nesting and huge numbers refused before zarr parses it
    try:
        array = zarr.open_array(store=str(where), mode="r")
    except Exception as exc:
        raise BloodcellInputError(f"OME-Zarr dataset {name!r} cannot be opened: "
                                  f"{' '.join(str(exc).split())[:200]}", folder) from None
    return array


def open_ome_zarr(path: str | Path) -> Pyramid:
    """An OME-Zarr folder as a :class:`~.pyramid.Pyramid` (see the module docstring for what is checked)."""
    path = Path(path)
    names, axes = read_multiscales(path)
    arrays = [_open_array(path, name) for name in names]
    shapes = [tuple(int(n) for n in a.shape) for a in arrays]
    if axes is None:
        axes = _guess_axes(len(shapes[0]), shapes[0])
    for name, shape in zip(names, shapes):
        if len(shape) != len(axes):
            raise BloodcellInputError(f"OME-Zarr dataset {name!r} has {len(shape)} dimensions where the axes are "
                                      f"{axes!r}", path)
    yx = [(dict(zip(axes, s)).get("Y", 0), dict(zip(axes, s)).get("X", 0)) for s in shapes]
    check_levels(yx, path)
    levels = [Level(a, axes, path) for a in arrays]
    if len({(lv.dtype, lv.channels) for lv in levels}) != 1:
        raise BloodcellInputError("OME-Zarr levels differ in pixel type or channels", path)
    return Pyramid(path, "ome-zarr", levels)
