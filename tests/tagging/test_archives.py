"""Archives as inputs: .tar, .tar.gz and .zip members tagged in place as ``ARCHIVE#member``, locally and on
gs://, with the frames of the extracted files; damaged archives give rows with reasons. End to end through
tag_audio's command line (in this process) on the bundled keyword model and real recordings."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import storage
from tests.support.pipeline_helpers import (
    ESC10,
    REPO,
    frames_by_uri,
    read_table,
    require_shared,
    rows_by_uri,
    run_tag_audio_here,
)

KEYWORD_MODEL = REPO / "examples" / "models" / "keyword"
CLIPS = 4


def tag(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """tag_audio in this process, on the bundled keyword model."""
    return run_tag_audio_here([*args, "--model_path", str(KEYWORD_MODEL)], cwd=cwd)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """A folder holding clips/ with real recordings, and WebDataset-style sidecars beside them."""
    require_shared(ESC10)
    if not (KEYWORD_MODEL / "saved_model.pb").exists():
        pytest.skip(f"{KEYWORD_MODEL} is not here")
    root = tmp_path_factory.mktemp("recordings")
    clips = root / "extracted" / "clips"
    clips.mkdir(parents=True)
    for source in sorted((ESC10 / "audio").glob("*.ogg"))[:CLIPS]:
        shutil.copy2(source, clips / source.name)
        (clips / source.name).with_suffix(".json").write_text(f'{{"key": "{source.stem}"}}')
        (clips / source.name).with_suffix(".cls").write_text("3")
    shutil.copy2(REPO / "examples" / "audio" / "lift.wav", clips / "lift.wav")  # WAV: a tar window on PCM
    return root


def make_archives(root: Path, folder: Path) -> dict[str, Path]:
    names = sorted(p.name for p in folder.iterdir())
    with tarfile.open(root / "shard.tar", "w") as tar:
        for name in names:
            tar.add(folder / name, arcname=f"clips/{name}")
    with tarfile.open(root / "shard.tar.gz", "w:gz") as tar:
        for name in names:
            tar.add(folder / name, arcname=f"clips/{name}")
    with zipfile.ZipFile(root / "shard.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:  # WAV deflated, Ogg stored: both ways a member is read
            compression = zipfile.ZIP_DEFLATED if name.endswith(".wav") else zipfile.ZIP_STORED
            archive.write(folder / name, f"clips/{name}", compress_type=compression)
    return {"tar": root / "shard.tar", "tgz": root / "shard.tar.gz", "zip": root / "shard.zip"}


def assert_members_equal_extracted(out: Path, archives: dict[str, str], folder: Path) -> None:
    rows, frames = rows_by_uri(out), frames_by_uri(out)
    audio = sorted(p.name for p in folder.iterdir() if p.suffix in (".ogg", ".wav"))
    for archive in archives.values():
        members = sorted(uri for uri in rows if uri.startswith(f"{archive}#"))
        assert members == [f"{archive}#clips/{name}" for name in audio]  # sidecars are not inputs
        for name in audio:
            member, extracted = f"{archive}#clips/{name}", str(folder / name)
            assert rows[member]["status"] == "ok", rows[member]
            assert rows[member]["num_frames"] == rows[extracted]["num_frames"] > 0
            np.testing.assert_allclose(frames[member], frames[extracted], atol=1e-4)


def test_tar_tgz_and_zip_members_give_the_frames_of_the_extracted_files(recordings, tmp_path):
    folder = recordings / "extracted" / "clips"
    archives = {kind: str(path) for kind, path in make_archives(tmp_path, folder).items()}
    stdout = ok(tag(tmp_path, "--input", str(folder), "--input", str(tmp_path / "shard.t*"),
                    "--input", archives["zip"], "--output", "out", "--archive_sidecar", "json"))
    assert f"{4 * (CLIPS + 1)} input files: {4 * (CLIPS + 1)} new" in stdout
    assert_members_equal_extracted(tmp_path / "out", archives, folder)
    # WebDataset sidecars: key.json beside key.ogg comes along in the 'sidecar' column.
    sidecars = {row["uri"]: row["sidecar"] for row in read_table(tmp_path / "out", "files").to_pylist()}
    for archive in archives.values():
        for clip in folder.glob("*.ogg"):
            assert sidecars[f"{archive}#clips/{clip.name}"] == f'{{"key": "{clip.stem}"}}'
        assert sidecars[f"{archive}#clips/lift.wav"] is None  # no lift.json
    assert sidecars[str(folder / "lift.wav")] is None

    # Per member done-set: nothing to do again; a rewritten archive re-plans its members.
    stdout = ok(tag(tmp_path, "--input", str(tmp_path / "shard.t*"), "--input", archives["zip"],
                    "--output", "out", "--plan_only"))
    assert f"{3 * (CLIPS + 1)} input files: 0 new, 0 changed, {3 * (CLIPS + 1)} done" in stdout
    # A manifest may name members themselves; a member tagged through its archive is done.
    (tmp_path / "members.txt").write_text(f"{archives['tar']}#clips/lift.wav\n"
                                          f"{archives['zip']}#clips/no.wav\n")
    stdout = ok(tag(tmp_path, "--input_manifest", "members.txt", "--output", "out", "--plan_only"))
    assert "2 input files: 1 new, 0 changed, 1 done" in stdout  # no.wav: a new not_found row
    os.utime(archives["zip"], (1.9e9, 1.9e9))
    stdout = ok(tag(tmp_path, "--input", archives["zip"], "--output", "out", "--plan_only"))
    assert f"{CLIPS + 1} input files: 0 new, {CLIPS + 1} changed" in stdout


def test_archives_on_gcs_give_the_frames_of_the_extracted_files(recordings, tmp_path, gcs):
    folder = recordings / "extracted" / "clips"
    prefix = gcs.bucket("shards") + "/corpus"
    archives = {kind: gcs.upload_file(path, f"{prefix}/{path.name}")
                for kind, path in make_archives(tmp_path, folder).items()}
    stdout = ok(tag(tmp_path, "--input", str(folder), "--input", f"{prefix}/shard.*",
                    "--output", "out"))
    assert f"{4 * (CLIPS + 1)} input files: {4 * (CLIPS + 1)} new" in stdout
    assert_members_equal_extracted(tmp_path / "out", archives, folder)


def test_a_member_reads_as_its_own_bytes_whatever_the_archive(tmp_path):
    """storage.open_read on ARCHIVE#member: every byte, and seeks back and forth, for each way a member
    is stored (tar window, tar.gz cursor, zip stored window, zip deflated, zip bzip2)."""
    rng = np.random.default_rng(5)
    blobs = {f"d/m{i}.wav": rng.bytes(int(rng.integers(1, 200_000))) + bytes(int(rng.integers(0, 400_000)))
             for i in range(5)}
    for name, data in blobs.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    with tarfile.open(tmp_path / "a.tar", "w") as tar, tarfile.open(tmp_path / "a.tgz", "w:gz") as tgz:
        for name in blobs:
            tar.add(tmp_path / name, arcname=name)
            tgz.add(tmp_path / name, arcname=name)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as mixed, \
            zipfile.ZipFile(tmp_path / "b.zip", "w", zipfile.ZIP_BZIP2) as bzip2:
        for i, name in enumerate(blobs):
            mixed.write(tmp_path / name, name, zipfile.ZIP_DEFLATED if i % 2 else zipfile.ZIP_STORED)
            bzip2.write(tmp_path / name, name)
    for archive in ("a.tar", "a.tgz", "a.zip", "b.zip"):
        path = str(tmp_path / archive)
        assert [member.name for member in storage.list_members(path)] == list(blobs)
        for name in reversed(list(blobs)):  # against archive order: a .tar.gz cursor restarts
            data = blobs[name]
            with storage.open_read(storage.member_uri(path, name)) as member:
                assert member.read() == data, (archive, name)
                for _ in range(4):
                    start, count = int(rng.integers(0, len(data))), int(rng.integers(0, 70_000))
                    member.seek(start)
                    assert member.read(count) == data[start:start + count], (archive, name, start)
                member.seek(-10, io.SEEK_END)
                assert member.read() == data[-10:]


def test_a_member_of_a_gcs_archive_downloads_its_own_bytes_not_the_archive(tmp_path, gcs, monkeypatch):
    """A tar and a stored zip of 12 members of 1 MiB on gs://: reading one member downloads about its
    size (a remote read's default is 8 MiB ahead: a clip from an archive would cost the clips after it);
    its bytes read whole and from seeks."""
    from google.cloud.storage.blob import Blob

    rng = np.random.default_rng(7)
    blobs = {f"clips/m{i:02d}.flac": rng.bytes(1 << 20) for i in range(12)}
    with tarfile.open(tmp_path / "a.tar", "w") as tar, \
            zipfile.ZipFile(tmp_path / "a.zip", "w", zipfile.ZIP_STORED) as stored:
        for name, data in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            stored.writestr(name, data)
    downloaded = []
    download = Blob.download_as_bytes

    def counted(self, *args, **kwargs):
        data = download(self, *args, **kwargs)
        downloaded.append(len(data))
        return data

    monkeypatch.setattr(Blob, "download_as_bytes", counted)
    prefix = gcs.bucket("member-reads")
    for archive in ("a.tar", "a.zip"):
        uri = gcs.upload_file(tmp_path / archive, f"{prefix}/{archive}")
        assert len(list(storage.list_members(uri))) == len(blobs)  # lists headers, read ahead in big chunks
        for name in ("clips/m03.flac", "clips/m07.flac"):
            downloaded.clear()
            with storage.open_read(storage.member_uri(uri, name)) as member:
                assert member.read() == blobs[name], (archive, name)
                assert sum(downloaded) < (1 << 20) + 4096, (archive, name, downloaded)
                member.seek(1000)  # behind what was read: fetched again, still no further than the member
                assert member.read(5000) == blobs[name][1000:6000]
            assert sum(downloaded) < 2 * (1 << 20) + 8192, (archive, name, downloaded)


# --- damaged and hostile archives ---------------------------------------------------------------------

def _patch_zip_member(data: bytearray, name: str, flags: int = 0, declared_size: int | None = None) -> None:
    """Sets ``flags`` bits and the declared uncompressed size of member ``name`` in its local header and
    its central-directory entry, as a hostile or damaged writer would."""
    encoded = name.encode()
    for signature, flags_at, size_at, name_at in ((b"PK\x03\x04", 6, 22, 30), (b"PK\x01\x02", 8, 24, 46)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            if data[start + name_at: start + name_at + len(encoded)] == encoded:
                old_flags = struct.unpack_from("<H", data, start + flags_at)[0]
                struct.pack_into("<H", data, start + flags_at, old_flags | flags)
                if declared_size is not None:
                    struct.pack_into("<I", data, start + size_at, declared_size)
            start += 4


@pytest.fixture(scope="module")
def damaged(recordings, tmp_path_factory):
    """One run over a truncated tar and tar.gz and a zip/tar holding every bad member; its rows."""
    root = tmp_path_factory.mktemp("damaged")
    clips = sorted((recordings / "extracted" / "clips").glob("*.ogg"))
    with tarfile.open(root / "cut.tar", "w") as tar:
        for clip in clips:
            tar.add(clip, arcname=f"clips/{clip.name}")
    whole = (root / "cut.tar").read_bytes()
    with tarfile.open(root / "cut.tar") as tar:
        third = [info for info in tar.getmembers()][2]
    (root / "cut.tar").write_bytes(whole[: third.offset_data + third.size // 2])  # cut inside member 3
    (root / "cut.tar.gz").write_bytes(gzip.compress(whole[: third.offset_data + third.size // 2]))

    good, corrupt = clips[0].read_bytes(), bytearray(clips[1].read_bytes())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good.ogg", good)
        archive.writestr("corrupt.ogg", bytes(corrupt))
        archive.writestr("encrypted.ogg", good)
        archive.writestr("bomb.wav", good)
        archive.writestr("inner.zip", b"PK\x05\x06" + bytes(18))
        archive.writestr("../escape.ogg", good)
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("corrupt.ogg")
    start = info.header_offset + 30 + len("corrupt.ogg")
    data[start + info.compress_size // 3: start + info.compress_size // 3 + 64] = os.urandom(64)
    _patch_zip_member(data, "encrypted.ogg", flags=0x1)
    _patch_zip_member(data, "bomb.wav", declared_size=0xFFFF_FFF0)  # 4 GiB from ~100 kB
    (root / "bad.zip").write_bytes(bytes(data))
    (root / "not_really.zip").write_text("a text file with an archive's name")

    (root / "manifest.txt").write_text(f"# a manifest line may name an archive\n{root / 'cut.tar.gz'}\n")
    result = tag(root, "--input", str(root / "cut.tar"), "--input_manifest", str(root / "manifest.txt"),
                 "--input", str(root / "*.zip"), "--output", "out")
    return {"root": root, "result": result, "rows": rows_by_uri(root / "out") if result.returncode == 0
            else {}, "clips": clips}


def _error_kind(row: dict) -> str:
    return (row["error"] or "").split(":", 1)[0]


def test_a_cut_tar_gives_ok_rows_for_its_complete_members_and_a_reason_for_the_cut_one(damaged):
    ok(damaged["result"])
    root, rows, clips = damaged["root"], damaged["rows"], damaged["clips"]
    for archive in (root / "cut.tar", root / "cut.tar.gz"):
        members = {uri.split("#", 1)[1]: row for uri, row in rows.items() if uri.startswith(f"{archive}#")}
        assert sorted(members) == [f"clips/{clip.name}" for clip in clips[:3]], archive
        for clip in clips[:2]:
            assert members[f"clips/{clip.name}"]["status"] == "ok", members
        cut = members[f"clips/{clips[2].name}"]
        assert cut["status"] == "failed" and _error_kind(cut) == "truncated", cut
        assert "ends inside this member" in cut["error"]


def test_bad_zip_members_get_rows_with_their_reasons(damaged):
    ok(damaged["result"])
    rows = damaged["rows"]
    zip_uri = str(damaged["root"] / "bad.zip")
    member = {uri.split("#", 1)[1]: row for uri, row in rows.items() if uri.startswith(f"{zip_uri}#")}
    assert member["good.ogg"]["status"] == "ok"
    assert member["corrupt.ogg"]["status"] != "ok" and _error_kind(member["corrupt.ogg"]) == "corrupt_member"
    encrypted = member["encrypted.ogg"]
    assert _error_kind(encrypted) == "unreadable" and "encrypted" in encrypted["error"]
    assert _error_kind(member["bomb.wav"]) == "too_large" and member["bomb.wav"]["status"] == "failed"
    assert member["inner.zip"]["error"].startswith("unsupported: nested archive")
    assert _error_kind(member["../escape.ogg"]) == "unsafe_path"
    assert not (damaged["root"].parent / "escape.ogg").exists()
    not_archive = rows[str(damaged["root"] / "not_really.zip")]
    assert not_archive["status"] == "failed" and _error_kind(not_archive) == "not_archive"
