"""What a reviewer does to cells, by key or button: classify, accept, mark not classed, reject, label, undo and
redo, move through the queue and sign. A mix-in of :class:`~.review.ReviewWidget`, which provides ``session``,
``reviewer()``, ``threshold``, ``flags_edit`` and ``_error()``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...core.errors import BloodcellInputError


class ReviewActions:
    """The actions; each one changes the annotation table, which the display and panels follow."""

    def _guard(self, action) -> None:
        """Run an action; a bad-input error is shown, never raised into Qt."""
        try:
            action()
        except BloodcellInputError as exc:
            self._error(str(exc))

    def _targets(self) -> np.ndarray:
        if self.session is None:
            raise BloodcellInputError("start a review first")
        return self.session.display.selected_ids()

    def _after_action(self, ids: np.ndarray) -> None:
        s = self.session
        if len(ids) > 1:
            s.display.markers.selected_data = set()
        elif s.display.current is not None and len(ids) == 1 and ids[0] == s.display.current:
            self._advance()

    def assign(self, label: int | str) -> None:
        ids = self._targets()
        if len(ids):
            self.session.table.set_class(ids, label, by=self.reviewer())
            self._after_action(ids)

    def move_to_class(self, ids: np.ndarray, name: str | None) -> None:
        """From the gallery: a class, or None for not classed."""
        if self.session is None:
            return
        if name is None:
            self.session.table.set_review(ids, "not_classed", by=self.reviewer())
        else:
            self.session.table.set_class(ids, name, by=self.reviewer())

    def _set_review(self, state: str) -> None:
        ids = self._targets()
        if len(ids):
            self.session.table.set_review(ids, state, by=self.reviewer())
            self._after_action(ids)

    def accept_certain_rest(self) -> None:
        """Accept, in one undoable step, every unreviewed cell the model was sure of (confidence at or above the
        *uncertain below* threshold): the uncertain ones get a person's look, the rest are confirmed at once."""
        if self.session is None:
            raise BloodcellInputError("start a review first")
        t = self.session.table
        certain = t.ids[(t.col("review") == "unreviewed") & ~t.uncertain_mask(self.threshold.value())]
        if len(certain):
            t.set_review(certain, "accepted", by=self.reviewer())
            self._advance()

    def accept(self) -> None:
        self._set_review("accepted")

    def not_classed(self) -> None:
        self._set_review("not_classed")

    def reject(self) -> None:
        ids = self._targets()
        if len(ids):
            self.session.display.reject_or_delete(ids, self.reviewer())
            self._after_action(ids)

    def set_flags(self) -> None:
        """Record the typed multi-label flags on the current cell (one undoable edit)."""
        s = self.session
        if s is None or s.display.current is None or s.display.current not in s.table:
            return
        flags = [f.strip() for f in self.flags_edit.text().split(",") if f.strip()]
        if flags != s.table.object_info(s.display.current)["flags"]:
            s.table.set_flags([s.display.current], flags, by=self.reviewer())

    def undo(self) -> None:
        if self.session is not None:
            self._back_to(self.session.table.undo(), "nothing to undo")

    def redo(self) -> None:
        if self.session is not None:
            self._back_to(self.session.table.redo(), "nothing to redo")

    def _back_to(self, edit: Any, nothing: str) -> None:
        """After undo/redo the cell it touched becomes the current one again, so the reviewer sees what changed
        (the review had moved on to the next cell after the original decision)."""
        if edit is None:
            self._error(nothing)
            return
        table = self.session.table
        touched = [int(i) for i in [*edit.after.columns["id"].tolist(), *edit.before.columns["id"].tolist()]
                   if int(i) in table]
        if touched:
            self.session.display.set_current(touched[0], zoom=len(touched) == 1)

    def next(self) -> None:
        self._step(+1)

    def previous(self) -> None:
        self._step(-1)

    def go_to(self, object_id: int) -> None:
        if self.session is not None:
            self.session.display.set_current(object_id)
            self._update_status()

    def _step(self, direction: int) -> None:
        if self.session is None:
            return
        order = self.session.table.queue(only_unreviewed=False)
        if not len(order):
            return
        current = self.session.display.current
        hits = np.flatnonzero(order == current) if current is not None else []
        k = (int(hits[0]) + direction) % len(order) if len(hits) else 0
        self.go_to(int(order[k]))

    def _advance(self) -> None:
        """After deciding on the current cell: the next unreviewed one in review order."""
        table = self.session.table
        left = table.queue()
        if len(left):
            self.go_to(int(left[0]))
        else:
            self._step(+1)

    def sign(self) -> None:
        """Sign the field (refused, with the reason shown, while uncertain cells are unreviewed)."""
        self._guard(self._sign)

    def _sign(self) -> None:
        s = self.session
        if s is None:
            raise BloodcellInputError("start a review first")
        outside = getattr(s, "outside", None)
        if outside is not None and len(outside):  # a region's sign-off signs the field: every region seen
            from ...core.annotations import AnnotationTable

            left = len(AnnotationTable(s.table.classes, outside.copy()).blocking_signoff(self.threshold.value()))
            if left:
                raise BloodcellInputError(f"cannot sign: {left} uncertain cell(s) outside this region are still "
                                          "unreviewed; review those regions first")
        signed = s.table.sign(self.reviewer(), below=self.threshold.value())
        from napari.utils.notifications import show_info

        show_info(f"{s.image['file_name']} signed by {signed['by']}")
        self._update_status()

    def _default_class(self) -> int:
        s = self.session
        if s is not None and s.display.current is not None and s.display.current in s.table:
            return int(s.table.col("label")[s.table.positions([s.display.current])[0]])
        return 0

    # -- export ----------------------------------------------------------------------------------------------------
