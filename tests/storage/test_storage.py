"""storage on local paths and on a real GCS server (the emulator): one behaviour for both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import storage


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    gcs = request.getfixturevalue("gcs")
    return f"{gcs.bucket('storage-test')}/root"


def test_write_read_list_rename_delete(root):
    storage.write_json(storage.join(root, "a", "x.json"), {"k": 1})
    storage.write_bytes(storage.join(root, "a", "b", "y.bin"), b"\x00\x01")
    assert storage.read_json(storage.join(root, "a", "x.json")) == {"k": 1}
    listed = storage.list_files(root)
    assert [f.path.rsplit("/", 1)[-1] for f in listed] == ["y.bin", "x.json"]
    assert [f.size_bytes for f in listed] == [2, len(b"{\n  \"k\": 1\n}")]
    assert storage.exists(storage.join(root, "a")) and storage.is_dir(storage.join(root, "a"))
    assert not storage.is_dir(storage.join(root, "a", "x.json"))
    assert storage.list_names(storage.join(root, "a")) == ["x.json"]
    storage.rename([storage.join(root, "a", "x.json")], [storage.join(root, "c", "x.json")])
    assert not storage.exists(storage.join(root, "a", "x.json"))
    storage.delete_tree(storage.join(root, "a"))
    assert [f.path.rsplit("/", 1)[-1] for f in storage.list_files(root)] == ["x.json"]
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "nothing-here"))


def test_listing_a_folder_that_is_not_there_raises_unless_asked_not_to(root):
    missing = storage.join(root, "never-written")
    assert storage.list_names(missing, missing_ok=True) == []
    if not storage.is_remote(root):  # a GCS prefix lists empty: it cannot be missing
        with pytest.raises(FileNotFoundError):
            storage.list_names(missing)
    storage.write_text(storage.join(missing, "now.json"), "{}")
    assert storage.list_names(missing, missing_ok=True) == ["now.json"]


def test_fingerprint_depends_on_bytes_not_on_where_they_are(root, tmp_path):
    local = tmp_path / "w.bin"
    local.write_bytes(b"weights" * 1000)
    storage.write_bytes(storage.join(root, "m", "w.bin"), local.read_bytes())
    assert storage.fingerprint([str(local)]) == storage.fingerprint([storage.join(root, "m", "w.bin")])
    assert storage.fingerprint([str(local)]) != storage.fingerprint([str(local)], with_names=True)


def test_local_copy_of_a_remote_directory_is_made_once_and_atomically(gcs, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_TAGGER_CACHE", str(tmp_path / "cache"))
    remote = f"{gcs.bucket('cache-test')}/model"
    storage.write_bytes(f"{remote}/saved_model.pb", b"pb")
    storage.write_bytes(f"{remote}/variables/variables.index", b"index")
    first = storage.local_copy(remote)
    assert sorted(os.listdir(first)) == ["saved_model.pb", "variables"]
    assert Path(first, "variables", "variables.index").read_bytes() == b"index"
    mtime = os.stat(first).st_mtime_ns
    assert storage.local_copy(remote) == first and os.stat(first).st_mtime_ns == mtime
    storage.write_bytes(f"{remote}/saved_model.pb", b"pb2")  # re-uploaded: a new copy
    second = storage.local_copy(remote)
    assert second != first and Path(second, "saved_model.pb").read_bytes() == b"pb2"
    assert not [n for n in os.listdir(os.path.dirname(os.path.dirname(first))) if n.startswith(".partial")]
