"""Output: the product's public contract under an OUT_DIR.

- ``layout``: paths, run ids, ``RunRecord``, what a published run is.
- ``publish``: staging -> published, then the final record.
- ``reader``: ``find_output``, ``published_runs`` and Parquet reads; used by backfills, training sets,
  inspect and plot. (Which inputs earlier runs already did, the done-set, is tagging's:
  ``transforms.tagging.done_set``.)
- ``summary`` / ``inspection`` / ``timeline_plot``: what a run did, for people.
- ``current``: the current view (latest ok result per file and config) and each row's state;
  ``compaction`` removes runs holding superseded rows only.
- ``table_coder``: how Beam carries Arrow tables (IPC; sizes estimated without pickling).
- ``tf_reader``: frames as a streaming ``tf.data.Dataset``; ``bigquery``: the schema BigQuery gives
  an external table over the Parquet.
"""
