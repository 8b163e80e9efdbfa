"""Active learning: which fields (or cells) to review next so the next retrain gains the most (issue 19).

:mod:`.acquisition` holds the model-free arithmetic (uncertainty measures, k-centre greedy, the strategies);
:mod:`.scoring` runs a detector or classifier on a field and its mirror image to get those measures and an
embedding; :mod:`.pool` gathers the unreviewed fields of a folder, a review project or a case and ranks them.
"""
