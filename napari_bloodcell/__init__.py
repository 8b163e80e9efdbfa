"""napari-bloodcell: review blood smears and MRI volumes with deep-learning help.

Importing the package must stay fast: no torch, napari or Qt here.
"""

__version__ = "0.1.0"
