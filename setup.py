"""Audio tagging at scale on Apache Beam: decode, frame, batched YAMNet / keyword models, Parquet out."""

from setuptools import find_packages, setup

# The Python versions supported: each has wheels of every pin below (TensorFlow 2.21, tfx-bsl and
# tensorflow-transform 1.21 publish cp311, cp312 and cp313 wheels), so the same pins resolve on all
# three and no environment marker is needed. `make test-py312` / `make test-py313` run the suite on
# the others; deploy/Dockerfile builds a worker image for any of them (--build-arg PYTHON_VERSION).
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")

# Versions that resolve together on every Python above (tensorflow-transform 1.21 pins
# TensorFlow 2.21 and protobuf 6). deploy/requirements.txt repeats these pins for
# worker images; tests/test_deploy.py checks that the two agree.
INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    "tf-keras==2.21.0",
    "tensorflow-hub==0.16.1",
    "tensorflow-transform==1.21.0",
    "pyarrow==25.0.1",
    "google-cloud-storage==3.17.1",
    "av==18.1.0",
    "soxr==1.1.0",
    "numpy==2.4.6",
    "h5py==3.14.0",
    "matplotlib==3.11.2",
    "pandas==3.1.1",
]

# The readers tests/output/test_readers.py proves (Spark also needs a Java 17+ runtime, or it skips).
TEST_REQUIRES = [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",  # make test: two workers, a module's tests on one (tests/conftest.py)
    "ruff==0.17.5",
    "duckdb==2.0.0",
    "gcp-storage-emulator==2026.7.19",
    "polars==2.1.0",
    "datasets==5.2.0",
    "pyspark==4.3.0",
    "imageio-ffmpeg==0.8.1",  # bench.decode: the ffmpeg command line the decoder is measured against
]

# `--runner dask` (docs/cluster.md). Beam's own dask extra asks only for dask and distributed >= 2024.4.2;
# pinned here so the driver, the scheduler and every worker run the same Dask (it warns on a mismatch and
# a task graph may not unpickle). These resolve with the pins above; `make test` installs them.
DASK_REQUIRES = [
    "dask==2026.8.0",
    "distributed==2026.8.0",
]

setup(
    name="audio-tagger",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.14",
    classifiers=[f"Programming Language :: Python :: {v}" for v in PYTHON_VERSIONS],
    packages=find_packages(include=["beam_jobs*", "transforms*", "schemas*", "storage*", "audio_models*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "dask": DASK_REQUIRES},
)
