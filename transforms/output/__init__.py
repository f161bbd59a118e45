"""Output: the product's public contract under an OUT_DIR.

- ``layout``: paths, run ids, ``RunRecord``, what a published run is.
- ``publish``: staging -> published, then the final record.
- ``reader``: ``find_output`` and Parquet reads; used by backfills, training sets, inspect and plot.
- ``done_set``: which inputs earlier runs already did.
- ``summary`` / ``inspection`` / ``timeline_plot``: what a run did, for people.
"""
