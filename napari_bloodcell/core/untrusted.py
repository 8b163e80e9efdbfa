"""Every file is untrusted input: the one place that turns names, paths, numbers and sizes read from files into
values the rest of the code can use.

Annotation files, review sidecars and datasets travel between labs and come from the internet, so whatever they
say is data, never an instruction: a ``file_name`` of ``../../victim.txt`` or ``/etc/passwd`` must neither pick the
place an output is written nor pull an arbitrary file into a dataset. The rules, used by every reader and writer:

* **Outputs** are named by :func:`output_name` (a file name with no folder part, no control characters, bounded
  length) and placed with :func:`inside`, which refuses anything that resolves outside the output folder
  (``..``, absolute paths, symbolic links pointing out).
* **Input images** named by a file are accepted only by :func:`image_file`: a regular file whose header decodes as
  an image of a supported type within the pixel limit.
* **Text** is read with :func:`read_text`: regular files only (a FIFO would block for ever), bounded size, UTF-8.
  JSON (:func:`load_json`) refuses NaN/Infinity, absurdly long numbers and deep nesting with one clear line;
  YAML (:func:`load_yaml`) refuses anchors and aliases, which is how a few hundred bytes expand into gigabytes.
* **Numbers** go through :func:`finite` and :func:`whole`: NaN, infinities, 1e400 and 1.7-as-an-id are refused.
* **Sizes** are bounded by :func:`max_pixels` (one setting, ``BLOODCELL_MAX_PIXELS``) and :data:`MAX_TEXT_BYTES`.

Every refusal is a :class:`~.errors.BloodcellInputError` naming the file and the problem.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import BloodcellInputError

MAX_TEXT_BYTES = int(os.environ.get("BLOODCELL_MAX_TEXT_MB", "512")) * 1024 * 1024
"""Annotation and sidecar files larger than this are refused before they are parsed (a 512 MB COCO file holds
millions of boxes)."""
DEFAULT_MAX_PIXELS = 2_500_000_000
"""50,000 x 50,000 pixels: larger than any smear scan; images above it are refused unless the limit is raised."""
MAX_COORDINATE = 1e7
"""No image is ten million pixels wide: a coordinate beyond this is a broken or hostile file, not a cell."""
MAX_NAME_BYTES = 200
"""Output file names are cut well under the 255 bytes most file systems allow (suffixes are added to them)."""
MAX_CLASS_NAME = 120
MAX_JSON_DEPTH = 64
"""COCO, sidecars and manifests nest a handful of levels; 200,000 levels is an attack on the parser."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ------------------------------------------------------------------------------------------------------ sizes


def max_pixels() -> int:
    """The project's limit on the pixels of one image (every format), from ``BLOODCELL_MAX_PIXELS`` if set."""
    raw = os.environ.get("BLOODCELL_MAX_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise BloodcellInputError(f"BLOODCELL_MAX_PIXELS={raw!r} is not a number of pixels") from None
    if value <= 0:
        raise BloodcellInputError(f"BLOODCELL_MAX_PIXELS={raw!r} must be a positive number of pixels")
    return value


def check_pixels(width: int, height: int, path: str | Path | None, planes: int = 1) -> None:
    """Refuse an image whose header declares more pixels than the project's limit (before any decoding)."""
    if width <= 0 or height <= 0:
        raise BloodcellInputError(f"image header declares an empty {width}x{height} image", path)
    limit = max_pixels()
    if width * height * max(planes, 1) > limit:
        raise BloodcellInputError(
            f"image declares {width}x{height}{f'x{planes}' if planes > 1 else ''} pixels, above the limit of "
            f"{limit:,} pixels (a guard against decompression bombs); if the image is genuine, raise it with "
            f"BLOODCELL_MAX_PIXELS={width * height * max(planes, 1)}",
            path,
        )


# ------------------------------------------------------------------------------------------------------ input


def regular_file(path: str | Path) -> Path:
    """``path`` if it is an existing regular file (following links); FIFOs, devices and folders are refused."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BloodcellInputError("no such file", path) from None
    except OSError as exc:
        raise BloodcellInputError(f"cannot read: {exc.strerror or exc}", path) from None
    if stat.S_ISDIR(mode):
        raise BloodcellInputError("is a folder, not a file", path)
    if not stat.S_ISREG(mode):
        raise BloodcellInputError("is not a regular file (a pipe, socket or device); refusing to read it", path)
    return path


def is_regular_file(path: str | Path) -> bool:
    """Like ``Path.is_file`` but False for FIFOs, sockets and devices, and never raises."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    path = regular_file(path)
    limit = MAX_TEXT_BYTES if limit is None else limit
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = b"" if size > limit else fh.read(size + 1)  # read(n) allocates n bytes up front
    except OSError as exc:
        raise BloodcellInputError(f"cannot read: {exc.strerror or exc}", path) from None
    if size > limit or len(data) > limit:
        raise BloodcellInputError(f"is larger than {limit // (1024 * 1024)} MB; refusing to parse it "
                                  "(raise BLOODCELL_MAX_TEXT_MB if it is genuine)", path)
    return data


def read_text(path: str | Path, limit: int | None = None) -> str:
    """A bounded UTF-8 text file (a byte-order mark is allowed), with one clear line when it is not text."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BloodcellInputError(f"is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); save it as "
                                  "UTF-8", path) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _null_constant(name: str) -> None:
    return None


def parse_json(text: str, path: str | Path | None = None, nan_as_null: bool = False) -> Any:
    """JSON from untrusted text: NaN/Infinity, numbers of thousands of digits and deep nesting are refused.
    ``nan_as_null`` reads NaN/Infinity as null instead, for our own registries and manifests, which versions
    before 0.2 wrote with NaN metrics."""
    depth = _nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise BloodcellInputError(f"malformed JSON: nested {depth} levels deep (at most {MAX_JSON_DEPTH} allowed)",
                                  path)
    try:
        return json.loads(text, parse_constant=_null_constant if nan_as_null else _refuse_constant)
    except json.JSONDecodeError as exc:
        raise BloodcellInputError(f"malformed JSON: {exc}", path) from None
    except (ValueError, RecursionError) as exc:  # int digit limit, NaN, nesting
        raise BloodcellInputError(f"malformed JSON: {_one_line(exc)}", path) from None


def _nesting_depth(text: str) -> int:
    """How deep brackets nest outside strings (escaped quotes honoured), counted without parsing, so a
    200,000-deep file is refused before the parser recurses into it. Only the positions of quotes, backslashes and
    brackets are worked on, by numpy (a character loop took 2.5 s of a 100,000-cell review sidecar's 15 MB)."""
    if "[" not in text and "{" not in text:
        return 0
    import numpy as np

    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    slashes = np.flatnonzero(data == ord("\\"))
    if len(slashes) and len(quotes):  # a quote after an odd run of backslashes is escaped
        first = np.ones(len(slashes), dtype=bool)
        first[1:] = np.diff(slashes) != 1
        run_start = np.maximum.accumulate(np.where(first, np.arange(len(slashes)), 0))
        at = np.minimum(np.searchsorted(slashes, quotes - 1), len(slashes) - 1)
        run = np.where(slashes[at] == quotes - 1, at - run_start[at] + 1, 0)  # the backslashes just before it
        quotes = quotes[run % 2 == 0]
    opening = np.flatnonzero((data == ord("[")) | (data == ord("{")))
    closing = np.flatnonzero((data == ord("]")) | (data == ord("}")))
    brackets = np.concatenate([opening, closing])
    steps = np.concatenate([np.ones(len(opening), np.int64), -np.ones(len(closing), np.int64)])
    order = np.argsort(brackets, kind="stable")
    brackets, steps = brackets[order], steps[order]
    outside = np.searchsorted(quotes, brackets) % 2 == 0  # an even number of quotes before it
    return int(np.cumsum(steps[outside]).max(initial=0))


def load_json(path: str | Path, limit: int | None = None, nan_as_null: bool = False) -> Any:
    return parse_json(read_text(path, limit), path, nan_as_null)


def plain_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN; strict readers, ours
    included, refuse it) and numpy scalars and tuples made plain."""
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value: Any, **kwargs: Any) -> str:
    """Strict JSON for files we write: NaN becomes null (never the non-standard ``NaN`` token)."""
    return json.dumps(plain_json(value), allow_nan=False, **kwargs)


def load_yaml(path: str | Path, limit: int = 1024 * 1024) -> Any:
    """A small YAML file (a YOLO ``data.yaml``) with anchors and aliases refused: the "billion laughs" attack
    expands a few hundred bytes of aliases into gigabytes, and no dataset description needs them."""
    import yaml

    text = read_text(path, limit)

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, "uses a YAML alias (*name), which is not allowed",
                                                  event.start_mark)
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise BloodcellInputError(f"malformed YAML: {_one_line(exc)}", path) from None
    except RecursionError:
        raise BloodcellInputError("malformed YAML: nested too deeply", path) from None


# ----------------------------------------------------------------------------------------------------- numbers


def finite(value: Any, what: str, path: str | Path | None, bound: float = MAX_COORDINATE) -> float:
    """A finite number within ±``bound``, from a number or numeric text; anything else is refused naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BloodcellInputError(f"{what} is {_show(value)}; a number is required", path)
    if isinstance(value, str) and len(value) > 64:
        raise BloodcellInputError(f"{what} is a {len(value)}-character text; a number is required", path)
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise BloodcellInputError(f"{what} is {_show(value)}; a number is required", path) from None
    if not math.isfinite(number) or abs(number) > bound:
        raise BloodcellInputError(f"{what} is {_show(value)}; a finite number within ±{bound:g} is required", path)
    return number


def whole(value: Any, what: str, path: str | Path | None, low: int | None = None, high: int | None = None) -> int:
    """An integer (``3`` or ``3.0``, never ``1.7``) within ``low..high``."""
    number = finite(value, what, path, bound=1e15)
    if number != int(number):
        raise BloodcellInputError(f"{what} is {_show(value)}; a whole number is required", path)
    result = int(number)
    if (low is not None and result < low) or (high is not None and result > high):
        span = f"{'' if low is None else low}..{'' if high is None else high}"
        raise BloodcellInputError(f"{what} is {result}; allowed {span}", path)
    return result


def optional_score(value: Any, what: str, path: str | Path | None) -> float:
    """A confidence in 0..1 (NaN when absent)."""
    if value is None:
        return math.nan
    score = finite(value, what, path, bound=1e6)
    if not 0.0 <= score <= 1.0:
        raise BloodcellInputError(f"{what} is {score:g}; a score must lie in 0..1", path)
    return score


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else f"{text[:297]}..."


one_line = _one_line


# ------------------------------------------------------------------------------------------------------- names


def class_name(value: Any, path: str | Path | None) -> str:
    """A class name: text without control characters (a newline would split YOLO's ``classes.txt``)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BloodcellInputError(f"class name {_show(value)} is not text", path)
    name = str(value).strip()
    if not name:
        raise BloodcellInputError("a class name is empty", path)
    if _CONTROL.search(name):
        raise BloodcellInputError(f"class name {name!r} contains a control character (newline, tab, ...)", path)
    if len(name) > MAX_CLASS_NAME:
        raise BloodcellInputError(f"class name {_show(name)} is longer than {MAX_CLASS_NAME} characters", path)
    return name


def output_name(name: str, fallback: str = "file") -> str:
    """A file name derived from untrusted ``name``: its last component only, control characters and separators
    replaced, never ``.``/``..``/empty, and short enough for any file system. The caller still places it with
    :func:`inside`."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = _CONTROL.sub("_", base).strip()
    base = base.encode("utf-8", "replace").decode("utf-8")
    if base in ("", ".", "..") or set(base) == {"."}:
        base = fallback
    if base.startswith("."):
        base = "_" + base[1:]  # no hidden files, which staging and locks use
    encoded = base.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        stem, dot, suffix = base.rpartition(".")
        suffix = f".{suffix}" if dot and len(suffix) <= 10 else ""
        keep = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
        base = (stem if suffix else base).encode("utf-8")[:keep].decode("utf-8", "ignore") + suffix
    return base


def safe_relative(name: str, fallback: str = "file") -> str:
    """A relative path kept from untrusted ``name`` (COCO ``images/train/a.jpg``): every component made an
    :func:`output_name`, with ``..``, ``.`` and absolute roots dropped."""
    parts = [p for p in re.split(r"[\\/]", str(name)) if p not in ("", ".", "..")]
    if re.fullmatch(r"[A-Za-z]:", parts[0] if parts else ""):
        parts = parts[1:]  # a Windows drive
    return "/".join(output_name(p, fallback) for p in parts) or fallback


def inside(folder: str | Path, relative: str | Path) -> Path:
    """``folder / relative``, refused unless it resolves inside ``folder`` (no ``..``, no absolute path, no
    symbolic link leading out)."""
    folder = Path(folder)
    target = folder / relative
    root = folder.resolve()
    resolved = target.resolve()
    if resolved != root and root not in resolved.parents:
        raise BloodcellInputError(f"refusing to write {str(relative)!r}: it resolves outside the output folder",
                                  folder)
    return target


def is_hex_digest(value: Any, length: tuple[int, int] = (8, 64)) -> bool:
    return isinstance(value, str) and length[0] <= len(value) <= length[1] and bool(re.fullmatch(r"[0-9a-f]+", value))


# ------------------------------------------------------------------------------------------------------ images


def image_file(candidate: str | Path | None) -> Path | None:
    """``candidate`` if it is a regular file of a supported image type whose header decodes within the pixel
    limit, else None (callers decide whether a missing image is an error). Never raises."""
    from .io.images import image_size, is_image_path

    if candidate is None:
        return None
    path = Path(candidate)
    if not is_image_path(path) or not is_regular_file(path):
        return None
    try:
        image_size(path)
    except BloodcellInputError:
        return None
    return path
