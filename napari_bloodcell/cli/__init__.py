"""The ``bloodcell`` command line: every verb calls the same core functions as the widgets."""
