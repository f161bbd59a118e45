"""Decoder processes: same samples as decoding in-thread, and a bad file costs one unit, not the worker.

Everything here runs real decoder processes (``python -m transforms.decoding.worker``)
on real encoded files; crashes and hangs are real too (a SIGKILL, a FIFO nobody
writes to).
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from tests.support import audio_factory
from transforms.decoding.messages import END, ERROR, INFO, SAMPLES, DecodeRequest, decode_messages
from transforms.decoding.pool import DecoderPool, DecodeSession, resolve_processes


def _collect(session: DecodeSession) -> dict[object, list[tuple]]:
    """Every message of every unit in flight, by tag, in arrival order."""
    messages: dict[object, list[tuple]] = {}
    while session.in_flight:
        tag, message = session.next_message()
        messages.setdefault(tag, []).append(message)
    return messages


def _samples(messages: list[tuple]) -> np.ndarray:
    chunks = [m[1] for m in messages if m[0] == SAMPLES]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


@pytest.fixture()
def pool():
    pool = DecoderPool(2, timeout_s=600)
    yield pool
    pool.close()


@pytest.fixture()
def files(tmp_path):
    made = {}
    for name, seconds, rate in (("a.flac", 3.0, 44100), ("b.opus", 2.0, 48000), ("c.mp3", 4.0, 44100),
                                ("d.wav", 1.5, 8000)):
        samples = audio_factory.chirp(seconds, rate, end_hz=3000)
        made[name] = str(audio_factory.write_audio(tmp_path / name, samples, rate))
    return made


def test_pool_yields_the_samples_decoding_in_thread_yields(pool, files):
    requests = {name: DecodeRequest(uri, 16000) for name, uri in files.items()}
    requests["c.mp3 from 1 s, 20000 samples"] = DecodeRequest(files["c.mp3"], 16000, start_sample=16000,
                                                              max_samples=20000)
    session = DecodeSession(pool)
    for tag, request in requests.items():
        session.submit(request, tag)
    received = _collect(session)

    assert set(received) == set(requests)
    for tag, request in requests.items():
        remote, local = received[tag], list(decode_messages(request))
        assert [m[0] for m in remote][:1] == [INFO] and remote[-1][0] == END
        assert remote[0][1] == local[0][1]  # the same AudioInfo
        assert remote[-1] == local[-1]  # same end: reached EOF, samples out, problem
        np.testing.assert_allclose(_samples(remote), _samples(local), rtol=0, atol=1e-7)
    bounded = received["c.mp3 from 1 s, 20000 samples"]
    assert bounded[-1][1] is False and 20000 <= bounded[-1][2] < 20000 + DecodeRequest.chunk_samples


def test_bad_files_end_with_their_reason(pool, tmp_path):
    bad = audio_factory.make_bad_files(tmp_path)
    session = DecodeSession(pool)
    for name, path in bad.items():
        session.submit(DecodeRequest(str(path), 16000), name)
    session.submit(DecodeRequest(str(tmp_path / "nowhere.wav"), 16000), "nowhere")
    received = _collect(session)
    assert received["nowhere"] == [(ERROR, "not_found: the file does not exist", 0)]
    for name, path in bad.items():
        local = list(decode_messages(DecodeRequest(str(path), 16000)))
        assert received[name][-1] == local[-1], name


def test_a_decoder_that_dies_costs_its_unit_only(pool, tmp_path):
    long_file = audio_factory.write_audio(tmp_path / "long.flac",
                                          audio_factory.sine(440, 120.0, 16000), 16000)
    short_file = audio_factory.write_audio(tmp_path / "short.wav",
                                           audio_factory.sine(440, 1.0, 16000), 16000)
    # A tiny mailbox: the decoder blocks after a few chunks, so it is surely still busy when killed.
    session = DecodeSession(pool, mailbox_messages=2)
    session.submit(DecodeRequest(str(long_file), 16000), "long")
    tag, message = session.next_message()
    assert (tag, message[0]) == ("long", INFO)
    (victim,) = pool.pids(busy_only=True)
    os.kill(victim, signal.SIGKILL)
    received = _collect(session)["long"]
    assert received[-1][0] == ERROR
    assert received[-1][1] == ("decoder_crash: the decoder process was killed by SIGKILL "
                               "while decoding this file")

    session.submit(DecodeRequest(str(short_file), 16000), "after")
    after = _collect(session)["after"]
    assert after[-1] == (END, True, 16000, None)
    assert victim not in pool.pids()


def test_a_decoder_that_hangs_is_stopped(tmp_path):
    fifo = tmp_path / "never_written.wav"
    os.mkfifo(fifo)  # opening it for reading blocks until a writer comes: none will
    ok_file = audio_factory.write_audio(tmp_path / "ok.wav", audio_factory.sine(440, 1.0, 16000),
                                        16000)
    pool = DecoderPool(1, timeout_s=1.0)
    try:
        session = DecodeSession(pool)
        session.submit(DecodeRequest(str(fifo), 16000), "stuck")
        session.submit(DecodeRequest(str(ok_file), 16000), "queued behind it")
        started = time.monotonic()
        received = _collect(session)
        assert received["stuck"] == [(ERROR, "decoder_timeout: decoding made no progress for 1 s; "
                                             "the decoder process was stopped", None)]
        assert received["queued behind it"][-1] == (END, True, 16000, None)
        assert time.monotonic() - started < 30
    finally:
        pool.close()


def test_an_abandoned_session_does_not_hold_the_decoders(tmp_path):
    pool = DecoderPool(1)
    long_file = audio_factory.write_audio(tmp_path / "long.flac",
                                          audio_factory.sine(440, 60.0, 16000), 16000)
    try:
        abandoned = DecodeSession(pool, mailbox_messages=1)
        for i in range(3):
            abandoned.submit(DecodeRequest(str(long_file), 16000), i)
        abandoned.next_message()
        abandoned.close()  # its decoder is blocked on a full mailbox: closing must release it

        session = DecodeSession(pool)
        session.submit(DecodeRequest(str(long_file), 16000, max_samples=16000), "next")
        assert _collect(session)["next"][-1][0] == END
    finally:
        pool.close()


def test_pool_size_follows_the_cores_left_to_each_process():
    cores = len(os.sched_getaffinity(0))
    assert resolve_processes(3) == 3
    assert resolve_processes(0) == 0
    assert resolve_processes(-1) == cores
    assert resolve_processes(-1, processes_per_machine=cores * 4) == 1
    assert resolve_processes(-1, processes_per_machine=0) == 1  # Dataflow: one SDK process per core


def test_a_decoder_started_before_the_environment_changed_never_decodes_after_it(gcs, files, monkeypatch):
    """A long-lived driver runs a local job, then one on gs:// with the storage endpoint and credentials
    set only then: the decoders of the first job knew neither, and must not take the second's units."""
    uri = gcs.upload_file(files["a.flac"], f"{gcs.bucket('pool-environment')}/a.flac")
    for key in gcs.env:
        monkeypatch.delenv(key, raising=False)
    pool = DecoderPool(1, timeout_s=600)
    try:
        session = DecodeSession(pool)
        session.submit(DecodeRequest(files["d.wav"], 16000), "local")
        assert _collect(session)["local"][-1][0] == END
        first = pool.pids()
        for key, value in gcs.env.items():
            monkeypatch.setenv(key, value)
        session.submit(DecodeRequest(uri, 16000), "remote")
        remote = _collect(session)["remote"]
        assert remote[-1][0] == END, remote[-1]
        assert _samples(remote).size == pytest.approx(3.0 * 16000, abs=160)
        assert pool.pids() != first  # the decoder was replaced, not reused
        session.submit(DecodeRequest(files["d.wav"], 16000), "again")
        assert _collect(session)["again"][-1][0] == END
        assert len(pool.pids()) == 1  # no decoder is left behind
    finally:
        pool.close()
