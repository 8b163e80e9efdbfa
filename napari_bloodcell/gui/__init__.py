"""napari front end: readers, writers, sample data and layer conversion. The only package that imports napari/Qt."""
