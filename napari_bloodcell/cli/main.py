"""``bloodcell <verb>``: argument parsing and the one-line error contract (exit 2, nothing half-written)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import (
    classification_verbs,
    detection_verbs,
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
                     + segmentation_verbs.REGISTRY):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..core.errors import BloodcellInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except BloodcellInputError as exc:
        print(f"bloodcell {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bloodcell {args.verb}: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
