"""One napari refresh for many property changes: a case's field switch sets data, colours, symbols and sizes of
the review's layers, and napari 0.9 refreshes a layer (slice, vispy upload, thumbnail, layer-list update) after
each of them, which made a switch several times slower than one refresh per layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def raw_layer(layer: Any) -> Any:
    """The layer itself behind napari's plugin proxy (which warns on private attributes), for the few private
    calls that save a field switch time."""
    return getattr(layer, "__wrapped__", layer)


@contextlib.contextmanager
def one_refresh(*layers: Any) -> Iterator[None]:
    """Changes to ``layers`` (Vectors, Points, Shapes) inside this block refresh each of them once when it ends.

    Uses napari's private ``Layer._block_refresh`` and blocks the data, features, colour and symbol events (vispy
    redraws, the viewer recomputes its extent and the layer list re-reads the row on each); one data and one
    features event follow at the end. On a napari without ``_block_refresh`` every change refreshes, as before."""
    raw = [raw_layer(layer) for layer in layers]
    if not all(hasattr(layer, "_block_refresh") for layer in raw):
        yield
        return
    emitters = []
    for layer in raw:
        for name in ("data", "features", "edge_color", "face_color", "symbol", "highlight"):
            emitters.append(getattr(layer.events, name, None))
        face = getattr(getattr(layer, "_face", None), "events", None)
        emitters.append(getattr(face, "colors", None))
    with contextlib.ExitStack() as stack:
        for layer in raw:
            stack.enter_context(layer._block_refresh())
        for emitter in emitters:
            if emitter is not None:
                stack.enter_context(emitter.blocker())
        yield
    for layer in raw:
        # one data event (the viewer's extent and the layer list follow it) for the blocked ones; its action is
        # none of added/changed/removed, so edit handlers that act on a person's edits ignore it
        layer.events.data(value=layer.data, action="refreshed", data_indices=(), vertex_indices=((),))
        layer.events.features()
        layer.refresh()
