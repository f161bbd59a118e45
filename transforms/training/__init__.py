"""Training: from frames and clips to classifiers.

- ``build``: ``build_training_set`` (frames + labels -> tf.Transform'ed TFRecord splits).
- ``labelled_rows`` / ``frame_source`` / ``report``: its parts: labels and splits, which runs, the report.
- ``head_trainer``: a classifier head on a training set and its end-to-end export.
- ``keyword_clips`` / ``keyword_trainer``: the keyword CNN from labelled clips.
- ``evaluation``: confusion matrices and per-label accuracy; ``feature_comparison``: log-mel vs encoder.
"""
