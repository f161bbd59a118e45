"""deploy/: pins, worker image, flex-template metadata, submit script, and Dataflow's view of the job.

Nothing here contacts Google.  The Dataflow tests build the real tag_audio
pipeline with the exact options ``deploy/submit_dataflow.py --dry-run`` prints:
once with ``--dry_run=True`` (job graph only), once with ``--template_location``
against the GCS emulator (staging and the full job JSON written to the bucket).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import requires
from pathlib import Path
from types import ModuleType

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.support.gcs_emulator import GcsEmulator

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
SHARED = REPO_ROOT.parent / "shared"
YAMNET_FIXTURE = SHARED / "fixtures" / "yamnet-hub-random"
IMAGE = "us-central1-docker.pkg.dev/audio-test/audio/tagger:gpu"
ACCELERATOR = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def _setup_py_value(name: str):  # noqa: ANN202 (whatever literal setup.py holds)
    """A literal assigned at module level in setup.py (e.g. INSTALL_REQUIRES), read without running it."""
    for node in ast.parse((REPO_ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name}")


def _setup_call_keyword(name: str) -> ast.expr:
    for node in ast.walk(ast.parse((REPO_ROOT / "setup.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == name:
                    return keyword.value
    raise AssertionError(f"setup() has no {name}=")


def _pins(lines: list[str]) -> dict[str, Requirement]:
    pins = {}
    for line in lines:
        requirement = Requirement(line)
        assert len(requirement.specifier) == 1 and next(iter(requirement.specifier)).operator == "==", (
            f"{line!r} is not an exact pin"
        )
        pins[canonicalize_name(requirement.name)] = requirement
    return pins


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _pinned_version(requirement: Requirement) -> str:
    return next(iter(requirement.specifier)).version


# --- pins ----------------------------------------------------------------------------------------------


def test_requirements_txt_repeats_setup_py_pins() -> None:
    setup_pins = _pins(_setup_py_value("INSTALL_REQUIRES"))
    image_pins = _pins(_requirement_lines(DEPLOY / "requirements.txt"))
    assert {name: (str(r.specifier), r.extras) for name, r in image_pins.items()} == {
        name: (str(r.specifier), r.extras) for name, r in setup_pins.items()
    }


def test_cuda_wheels_match_tensorflow_build() -> None:
    tf = pytest.importorskip("tensorflow")
    cuda_pins = _pins(_requirement_lines(DEPLOY / "requirements-cuda.txt"))
    tf_cuda_extra = {
        canonicalize_name(r.name): r
        for r in map(Requirement, requires("tensorflow") or [])
        if r.marker is not None and r.marker.evaluate({"extra": "and-cuda"})
    }
    assert set(cuda_pins) == set(tf_cuda_extra), "requirements-cuda.txt must cover tensorflow[and-cuda]"
    for name, pin in cuda_pins.items():
        assert tf_cuda_extra[name].specifier.contains(_pinned_version(pin)), (
            f"{name}=={_pinned_version(pin)} is outside tensorflow's {tf_cuda_extra[name].specifier}"
        )
    tensorflow_pin = _pins(_setup_py_value("INSTALL_REQUIRES"))["tensorflow"]
    assert tf.__version__ == _pinned_version(tensorflow_pin), "run this test with the pinned TensorFlow"

    build = tf.sysconfig.get_build_info()
    cuda_major_minor = ".".join(build["cuda_version"].split(".")[:2])
    runtime = _pinned_version(cuda_pins["nvidia-cuda-runtime-cu12"])
    assert runtime.startswith(cuda_major_minor + "."), f"CUDA runtime {runtime} vs TF built with {build}"
    cudnn = _pinned_version(cuda_pins["nvidia-cudnn-cu12"])
    assert cudnn.split(".")[0] == str(build["cudnn_version"]).split(".")[0], f"cuDNN {cudnn} vs {build}"


# --- worker image ----------------------------------------------------------------------------------


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def _dockerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))


def test_dockerfile_versions_agree_with_setup_py() -> None:
    text = _dockerfile()
    args = _dockerfile_args(text)

    beam_pin = _pinned_version(_pins(_setup_py_value("INSTALL_REQUIRES"))["apache-beam"])
    assert args["BEAM_VERSION"] == beam_pin

    python_requires = SpecifierSet(ast.literal_eval(_setup_call_keyword("python_requires")))
    python = args["PYTHON_VERSION"]
    assert python in _setup_py_value("PYTHON_VERSIONS")
    assert python_requires.contains(f"{python}.0"), f"image Python {python} vs setup.py {python_requires}"
    # The launcher stage gives the image its launcher binary only, so its own Python does not matter.
    from_launcher = re.findall(r"^COPY --from=template_launcher (\S+) (\S+)$", text, flags=re.MULTILINE)
    assert from_launcher == [("/opt/google/dataflow/python_template_launcher",) * 2]

    # The boot program comes from the SDK image of the same Beam and Python, and is the entrypoint.
    assert re.search(
        r"^FROM apache/beam_python\$\{PYTHON_VERSION\}_sdk:\$\{BEAM_VERSION\} AS beam_sdk$",
        text,
        flags=re.MULTILINE,
    )
    assert "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam" in text
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim-bookworm$", text, flags=re.MULTILINE)
    assert text.rstrip().splitlines()[-1] == 'ENTRYPOINT ["/opt/apache/beam/boot"]'


# --- Python versions --------------------------------------------------------------------------------


def test_python_versions_are_the_ones_setup_py_allows() -> None:
    versions = _setup_py_value("PYTHON_VERSIONS")
    assert versions == ("3.11", "3.12", "3.13")
    python_requires = SpecifierSet(ast.literal_eval(_setup_call_keyword("python_requires")))
    for version in versions:
        assert python_requires.contains(f"{version}.0") and python_requires.contains(f"{version}.9")
    for outside in ("3.10.12", "3.14.0"):
        assert not python_requires.contains(outside), outside
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in versions, "this interpreter is unsupported"


def test_dockerfile_builds_an_image_for_each_python_version() -> None:
    text = _dockerfile()
    accepted = re.search(r'case "\$\{PYTHON_VERSION\}" in ([\d.|]+)\)', text)
    assert accepted, "the Dockerfile must refuse a Python version setup.py does not support"
    assert tuple(accepted.group(1).split("|")) == _setup_py_value("PYTHON_VERSIONS")
    # The one build argument picks the base image and the Beam SDK image the boot program comes from.
    stages = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    beam = _dockerfile_args(text)["BEAM_VERSION"]
    for version in _setup_py_value("PYTHON_VERSIONS"):
        rendered = [s.replace("${PYTHON_VERSION}", version).replace("${BEAM_VERSION}", beam) for s in stages]
        assert f"apache/beam_python{version}_sdk:{beam}" in rendered
        assert f"python:{version}-slim-bookworm" in rendered
    assert "--build-arg PYTHON_VERSION=3.12" in (DEPLOY / "README.md").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_gives_each_interpreter_its_own_virtualenv() -> None:
    def planned(*args: str) -> str:
        result = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    ci = planned("test", "VENV=/nonexistent/ci-venv")
    assert "/nonexistent/ci-venv/bin/python -m pytest -q" in ci and "python3.11 -m venv" in ci
    assert ".venv/bin/python -m pytest" in planned("-W", "setup.py", "test", "PYTHON=python3.11")
    other = planned("-W", "setup.py", "test", "PYTHON=/opt/py/bin/python3.12")
    assert "/opt/py/bin/python3.12 -m venv .venv-python3.12" in other
    assert ".venv-python3.12/bin/python -m pytest -q" in other
    for minor in ("12", "13"):
        found = subprocess.run(["make", "-s", f"print-python-3.{minor}"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=60).stdout.strip()
        if found:  # the target runs the suite with that interpreter, in its own virtualenv
            assert found.endswith(f"python3.{minor}")
            plan = planned("-W", "setup.py", f"test-py3{minor}")
            assert f"{found} -m venv .venv-python3.{minor}" in plan
            assert f".venv-python3.{minor}/bin/python -m pytest" in plan


def test_dockerfile_installs_pins_project_and_template_entry() -> None:
    text = _dockerfile()
    assert "pip install -r /opt/audio-tagger/deploy/requirements.txt" in text
    # CUDA wheels only in the GPU variant; the CPU variant is a build argument.
    assert re.search(r'if \[ "\$\{VARIANT\}" = "gpu" \]; then pip install -r \S+requirements-cuda\.txt', text)
    assert _dockerfile_args(text)["VARIANT"] == "gpu"
    # Every package setup.py ships is copied into the image before `pip install`.
    package_patterns = ast.literal_eval(
        next(k.value for k in _setup_call_keyword("packages").keywords if k.arg == "include")
    )
    for pattern in package_patterns:
        package = pattern.rstrip("*")
        assert re.search(rf"^COPY {package} /opt/audio-tagger/src/{package}$", text, flags=re.MULTILINE), (
            package
        )
    assert "pip install --no-deps /opt/audio-tagger/src" in text
    assert "COPY deploy/flex_template/main.py /template/main.py" in text
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py" in text
    assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in text


def test_dockerignore_admits_everything_the_image_copies() -> None:
    admitted = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = set()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", _dockerfile(), flags=re.MULTILINE):
        copied.update(sources.split())
    assert copied and copied <= admitted, f"not in the build context: {copied - admitted}"


def test_flex_template_entry_runs_tag_audio(tmp_path: Path) -> None:
    # Run the way the launcher does: the file as a script, the project importable (installed).
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "flex_template" / "main.py"), "--help"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "python -m beam_jobs.tag_audio" in result.stdout and "--model_path" in result.stdout


# --- flex template metadata ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def make_metadata() -> ModuleType:
    return _load_module(DEPLOY / "flex_template" / "make_metadata.py")


def test_metadata_lists_every_tag_audio_parameter(make_metadata: ModuleType) -> None:
    from beam_jobs.tag_audio import TagAudioOptions

    metadata = json.loads((DEPLOY / "flex_template" / "metadata.json").read_text())
    parameters = {p["name"]: p for p in metadata["parameters"]}
    actions = make_metadata.option_actions(TagAudioOptions)
    with_value = {a.dest for a in actions if a.nargs != 0}
    flags = {a.dest for a in actions if a.nargs == 0}
    assert set(parameters) == with_value, (
        "metadata.json is out of date: run deploy/flex_template/make_metadata.py"
    )
    for flag in flags:  # the launcher passes --name=value, which a flag refuses; say so
        assert f"--{flag}" in metadata["description"]
    for parameter in parameters.values():
        assert parameter["label"] and parameter["helpText"], parameter["name"]
        for regex in parameter.get("regexes", []):
            re.compile(regex)
    assert parameters["output"]["isOptional"] is False

    def accepts(name: str, value: str) -> bool:
        return all(re.fullmatch(regex, value) for regex in parameters[name].get("regexes", []))

    assert accepts("model", "yamnet") and not accepts("model", "yamnet2")
    assert accepts("output", "gs://bucket/tags") and not accepts("output", "/home/me/tags")
    assert accepts("model_path", "gs://bucket/models/yamnet") and accepts("model_path", "https://tfhub.dev/x")
    assert accepts("batch_size", "256") and not accepts("batch_size", "-1")
    assert accepts("unit_s", "600") and accepts("unit_s", "0.5") and not accepts("unit_s", "ten")


def test_metadata_json_is_what_the_generator_writes(make_metadata: ModuleType) -> None:
    from beam_jobs.tag_audio import TagAudioOptions

    expected = make_metadata.render(make_metadata.build_metadata(TagAudioOptions))
    assert (DEPLOY / "flex_template" / "metadata.json").read_text() == expected, (
        "run: python deploy/flex_template/make_metadata.py"
    )


# --- submit script -------------------------------------------------------------------------------------

SUBMIT_BASE = ["--project=audio-test", "--region=us-central1", "--bucket=gs://df-bucket", f"--image={IMAGE}"]
JOB_ARGS = ["--input=gs://df-bucket/corpus/**.wav", "--output=gs://df-bucket/tags", "--model=yamnet"]


def submit_dry_run(submit_args: list[str], job_args: list[str]) -> list[str]:
    """The command ``submit_dataflow.py --dry-run`` prints, split into argv."""
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "submit_dataflow.py"), *submit_args, "--dry-run", "--", *job_args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    return shlex.split(line)


def _option(command: list[str], name: str) -> list[str]:
    return [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]


def test_submit_dry_run_gpu_command() -> None:
    command = submit_dry_run([*SUBMIT_BASE, "--max_workers=7", "--machine_type=n1-standard-4"], JOB_ARGS)
    assert command[1:3] == ["-m", "beam_jobs.tag_audio"]
    assert command[3:6] == JOB_ARGS, "job options must pass through unchanged"
    assert _option(command, "dataflow_service_options") == [f"worker_accelerator={ACCELERATOR}"]
    assert _option(command, "resource_hints") == [f"accelerator={ACCELERATOR}"]
    assert _option(command, "sdk_container_image") == [IMAGE]
    assert _option(command, "machine_type") == ["n1-standard-4"]
    assert _option(command, "max_num_workers") == ["7"]
    assert _option(command, "runner") == ["DataflowRunner"]
    assert _option(command, "temp_location") == ["gs://df-bucket/dataflow/tmp"]
    assert _option(command, "setup_file") == [str(REPO_ROOT / "setup.py")]
    assert _option(command, "device") == ["gpu"]


def test_submit_dry_run_gpu_sharing_options() -> None:
    command = submit_dry_run([*SUBMIT_BASE, "--gpu_type=nvidia-l4", "--nvidia_mps"], JOB_ARGS)
    assert _option(command, "dataflow_service_options") == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver;use_nvidia_mps"
    ]
    assert _option(command, "resource_hints") == ["accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]

    single = submit_dry_run([*SUBMIT_BASE, "--gpu_count=2", "--one_process_per_worker"], JOB_ARGS)
    assert "--experiments=no_use_multiple_sdk_containers" in single
    assert _option(single, "dataflow_service_options") == [
        "worker_accelerator=type:nvidia-tesla-t4;count:2;install-nvidia-driver"
    ]

    refused = subprocess.run(
        [
            sys.executable,
            str(DEPLOY / "submit_dataflow.py"),
            *SUBMIT_BASE,
            "--nvidia_mps",
            "--gpu_count=2",
            "--dry-run",
            "--",
            *JOB_ARGS,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "one GPU per worker" in refused.stderr


def test_submit_dry_run_cpu_only_has_no_accelerator() -> None:
    command = submit_dry_run([*SUBMIT_BASE, "--cpu_only", "--max_workers=3"], [*JOB_ARGS, "--batch_size=64"])
    assert not any("accelerator" in arg for arg in command)
    assert _option(command, "dataflow_service_options") == [] and _option(command, "resource_hints") == []
    assert _option(command, "machine_type") == ["n2-standard-8"]
    assert _option(command, "max_num_workers") == ["3"]
    assert _option(command, "device") == ["cpu"]
    assert _option(command, "sdk_container_image") == [IMAGE]


# --- Dataflow accepts the job (offline) -----------------------------------------------------------


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """setup.py and the packages, copied: Beam builds the sdist next to setup.py (egg-info and all)."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy2(REPO_ROOT / "setup.py", root / "setup.py")
    for pattern in ast.literal_eval(
        next(k.value for k in _setup_call_keyword("packages").keywords if k.arg == "include")
    ):
        package = pattern.rstrip("*")
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture()
def beam_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Beam's stager leaves its sdist in a mkdtemp() directory: keep those under tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def build_tag_audio_pipeline(argv: list[str]) -> beam.Pipeline:
    """The tag_audio pipeline for ``argv``, built but not run."""
    from beam_jobs import tag_audio

    return tag_audio.build_pipeline(PipelineOptions(argv))


def _job_argv(command: list[str]) -> list[str]:
    assert command[1:3] == ["-m", "beam_jobs.tag_audio"]
    return command[3:]


def _sdist_members(path: Path) -> set[str]:
    with tarfile.open(path) as sdist:
        return {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}


def _assert_gpu_worker_environment(pipeline_proto: beam_runner_api_pb2.Pipeline, image: str) -> None:
    """The environment running the model step: custom image, accelerator hint, the project's sdist."""
    transforms = pipeline_proto.components.transforms
    run_model = [t for t in transforms.values() if t.unique_name.endswith("/RunModel") and t.environment_id]
    assert run_model, "no RunModel step in the graph"
    environment = pipeline_proto.components.environments[run_model[0].environment_id]
    assert environment.urn == common_urns.environments.DOCKER.urn
    assert beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image == image
    hint = environment.resource_hints[common_urns.resource_hints.ACCELERATOR.urn]
    assert hint.decode() == ACCELERATOR
    staged_names = [
        beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(a.role_payload).staged_name
        for a in environment.dependencies
        if a.role_urn == common_urns.artifact_roles.STAGING_TO.urn
    ]
    assert "workflow.tar.gz" in staged_names, staged_names


@pytest.mark.skipif(not YAMNET_FIXTURE.is_dir(), reason=f"model fixture {YAMNET_FIXTURE} is absent")
def test_dataflow_dry_run_graph_carries_gpu_image_and_package(
    gcs: GcsEmulator, project_copy: Path, beam_temp_dir: Path
) -> None:
    gcs.bucket("df-bucket")
    command = submit_dry_run(
        [
            *SUBMIT_BASE,
            "--machine_type=n1-standard-4",
            "--max_workers=7",
            "--job_name=tag-audio-dry-run",
            f"--setup_file={project_copy / 'setup.py'}",
        ],
        [*JOB_ARGS, f"--model_path={YAMNET_FIXTURE}", "--progress_s=0"],
    )
    result = build_tag_audio_pipeline([*_job_argv(command), "--dry_run=True"]).run()

    _assert_gpu_worker_environment(result.job.proto_pipeline, IMAGE)
    environment = next(iter(result.job.proto_pipeline.components.environments.values()))
    sdist_paths = [
        Path(beam_runner_api_pb2.ArtifactFilePayload.FromString(a.type_payload).path)
        for a in environment.dependencies
        if beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(a.role_payload).staged_name
        == "workflow.tar.gz"
    ]
    (sdist,) = sdist_paths
    assert {"setup.py", "beam_jobs/tag_audio.py", "transforms/tagging/inference.py"} <= _sdist_members(sdist)
    google_options = result.job.options.get_all_options()
    assert google_options["machine_type"] == "n1-standard-4" and google_options["max_num_workers"] == 7
    assert google_options["dataflow_service_options"] == [f"worker_accelerator={ACCELERATOR}"]


@pytest.mark.skipif(not YAMNET_FIXTURE.is_dir(), reason=f"model fixture {YAMNET_FIXTURE} is absent")
def test_dataflow_template_job_json_has_worker_pool_settings(
    gcs: GcsEmulator, project_copy: Path, beam_temp_dir: Path
) -> None:
    gcs.bucket("df-bucket")
    # The model is read from the bucket on the driver too (spec and fingerprint), through TF's gs://.
    gcs.upload_dir(YAMNET_FIXTURE, "gs://df-bucket/models/yamnet")
    template = "gs://df-bucket/templates/tag_audio.json"
    command = submit_dry_run(
        [
            *SUBMIT_BASE,
            "--max_workers=12",
            "--nvidia_mps",
            "--job_name=tag-audio-template",
            f"--setup_file={project_copy / 'setup.py'}",
        ],
        [*JOB_ARGS, "--model_path=gs://df-bucket/models/yamnet", "--progress_s=0"],
    )
    build_tag_audio_pipeline(
        [*_job_argv(command), f"--template_location={template}"]
    ).run().wait_until_finish()

    job = json.loads(gcs.read_bytes(template))
    environment = job["environment"]
    (pool,) = environment["workerPools"]
    assert pool["machineType"] == "n1-standard-8"
    assert pool["autoscalingSettings"]["maxNumWorkers"] == 12
    assert pool["diskSizeGb"] == 50
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert {c["containerImage"] for c in pool["sdkHarnessContainerImages"]} == {IMAGE}
    assert environment["serviceOptions"] == [f"worker_accelerator={ACCELERATOR};use_nvidia_mps"]
    assert "use_runner_v2" in environment["experiments"]

    # Everything the workers need was staged into the bucket: the project's sdist and the pipeline.
    packages = {p["name"]: p["location"] for p in pool["packages"]}
    staged_sdist = "gs://" + packages["workflow.tar.gz"].removeprefix("storage.googleapis.com/")
    sdist = beam_temp_dir / "staged.tar.gz"
    sdist.write_bytes(gcs.read_bytes(staged_sdist))
    assert "beam_jobs/tag_audio.py" in _sdist_members(sdist)
    staging_dir = staged_sdist.rsplit("/", 1)[0]
    pipeline_proto = beam_runner_api_pb2.Pipeline.FromString(gcs.read_bytes(f"{staging_dir}/pipeline.pb"))
    _assert_gpu_worker_environment(pipeline_proto, IMAGE)

    options = {d["key"]: d["value"] for d in environment["sdkPipelineOptions"]["display_data"]}
    assert options["model_path"] == "gs://df-bucket/models/yamnet"
    assert options["output"] == "gs://df-bucket/tags"


@pytest.mark.skipif(not YAMNET_FIXTURE.is_dir(), reason=f"model fixture {YAMNET_FIXTURE} is absent")
def test_run_with_dry_run_builds_the_job_and_writes_no_run_record(
    gcs: GcsEmulator, project_copy: Path, beam_temp_dir: Path, capsys
) -> None:
    """The job's entry point under --dry_run builds the Dataflow job, runs nothing and records nothing."""
    from beam_jobs import tag_audio

    gcs.bucket("df-bucket")
    command = submit_dry_run(
        [*SUBMIT_BASE, "--job_name=tag-audio-entry-dry-run", f"--setup_file={project_copy / 'setup.py'}"],
        [*JOB_ARGS, f"--model_path={YAMNET_FIXTURE}", "--progress_s=0"],
    )
    argv = [*_job_argv(command), "--dry_run=True"]
    assert tag_audio.run(argv) == 0
    assert "nothing was run" in capsys.readouterr().out
    assert not [uri for uri in gcs.list_uris("gs://df-bucket") if "/runs/" in uri]
