"""``bloodcell <verb>``: argument parsing and the one-line error contract (exit 2, nothing half-written)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from . import (
    active_verbs,
    case_verbs,
    classification_verbs,
    detection_verbs,
    morphology_verbs,
    review_verbs,
    segmentation_verbs,
    verbs,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bloodcell",
        description="Blood-smear and MRI review tools: inspect, convert, detect, review, export, train and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for register in (verbs.REGISTRY + detection_verbs.REGISTRY + classification_verbs.REGISTRY + review_verbs.REGISTRY
                     + segmentation_verbs.REGISTRY + case_verbs.REGISTRY + morphology_verbs.REGISTRY
                     + active_verbs.REGISTRY):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. Bad input (a :class:`BloodcellInputError`, an operating-system refusal, memory running out)
    is one line naming the file and the problem, exit status 2; a traceback means a bug and says so."""
    from ..core.errors import BloodcellInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    verb = f"bloodcell {args.verb}"
    try:
        return int(args.run(args) or 0)
    except BloodcellInputError as exc:
        return _fail(verb, str(exc))
    except KeyboardInterrupt:
        print(f"{verb}: interrupted; {_kept_after_interrupt(args)}", file=sys.stderr)
        return 130
    except OSError as exc:  # read-only folder, full disk, a file where a folder should be, a name too long
        return _fail(verb, os_error_line(exc))
    except MemoryError:
        return _fail(verb, "ran out of memory (the input is larger than this machine can hold); nothing was written")
    except UnicodeError as exc:
        return _fail(verb, f"a file name or text is not valid UTF-8 ({_one_line(exc)})")
    except Exception:
        traceback.print_exc()
        print(f"{verb}: internal error: this is a bug in napari-bloodcell {__version__}, not a problem with your "
              "input; please report it with the command and the traceback above", file=sys.stderr)
        return 1


def _kept_after_interrupt(args) -> str:
    """What an interrupted run leaves: nothing, or (an archive on a cluster) the results finished so far."""
    from pathlib import Path

    out = getattr(args, "out", None)
    if isinstance(out, Path):
        from ..core.scale.archive import segment_store
        from ..core.scale.parts import parts_folder

        for folder in (parts_folder(out), parts_folder(segment_store(out))):
            if folder.is_dir():
                return f"the results finished so far are kept in {folder}; rerun the same command to continue"
    return "nothing was written"


def os_error_line(exc: OSError) -> str:
    """``PATH: reason`` for an operating-system error, on one line."""
    reason = exc.strerror or _one_line(exc) or type(exc).__name__
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    where = " -> ".join(os.fsdecode(n) if isinstance(n, bytes) else str(n) for n in names)
    return f"{where}: {reason}" if where else reason


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _fail(verb: str, message: str) -> int:
    text = " ".join(message.split()) or "failed"
    try:
        print(f"{verb}: error: {text}", file=sys.stderr)
    except UnicodeEncodeError:  # a file name that is not valid UTF-8 on a terminal that wants it
        print(f"{verb}: error: {text.encode('utf-8', 'backslashreplace').decode('ascii', 'backslashreplace')}",
              file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
