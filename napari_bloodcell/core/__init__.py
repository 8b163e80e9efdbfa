"""Pure logic: no napari, Qt or magicgui imports here (checked by import-linter and a test)."""
