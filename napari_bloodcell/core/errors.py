"""One error type for bad user input, so the CLI and the GUI can show one clear line instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class BloodcellInputError(ValueError):
    """A file or argument the user gave cannot be used.

    The message always names what was received and what is allowed; ``path`` is the offending file when there is
    one, so front ends can print ``path: problem`` on a single line.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


def nearest(value: str, allowed: list[str] | tuple[str, ...]) -> str:
    """A ' (did you mean X?)' hint for a mistyped choice, or an empty string."""
    import difflib

    match = difflib.get_close_matches(value, list(allowed), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
