"""Work beyond one process: archives on a Dask cluster (``cluster``, ``parts``, ``archive``)."""
