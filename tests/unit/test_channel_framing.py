"""The agent protocol's frames and the host's output buffers, without a guest."""

from __future__ import annotations

import gc
import os
import struct
import warnings
from pathlib import Path

import pytest

from pytest_qemu.channels.framing import (
    CHUNK_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    Frame,
    FrameReader,
    FrameType,
    decode_exit,
    decode_hello,
    encode,
    encode_run,
    encode_stream,
)
from pytest_qemu.channels.output import CommandOutput


def frames_of(data: bytes, step: int = 1) -> list[Frame]:
    reader = FrameReader()
    frames = []
    for start in range(0, len(data), step):
        frames += reader.feed(data[start : start + step])
    return frames


def test_frames_survive_any_split_of_the_stream() -> None:
    payload = os.urandom(5000)
    stream = encode(FrameType.STDOUT, 7, payload) + encode(FrameType.EXIT, 7, b"\0" * 8)
    for step in (1, 3, 16, 17, 4096, len(stream)):
        assert frames_of(stream, step) == [
            Frame(FrameType.STDOUT, 7, payload),
            Frame(FrameType.EXIT, 7, b"\0" * 8),
        ]


def test_a_reader_out_of_step_finds_the_next_real_header() -> None:
    # What a restarted agent's reader sees: the tail of a request cut short, holding the
    # magic bytes in its payload, then a real frame.
    cut_short = encode(FrameType.STDIN, 3, MAGIC + b"\x07" * 40)[9:]
    reader = FrameReader()
    frames = list(reader.feed(cut_short + encode(FrameType.PING, 9)))
    assert frames == [Frame(FrameType.PING, 9, b"")]
    assert reader.skipped == len(cut_short)


def test_a_header_with_a_bad_check_is_not_taken_for_a_frame() -> None:
    forged = struct.pack("<4sBBHII", MAGIC, FrameType.EXIT, 0, 0, 1, 8) + b"\0" * 8
    assert frames_of(forged + encode(FrameType.PONG, 2, b"0"), 64) == [
        Frame(FrameType.PONG, 2, b"0")
    ]


def test_streams_are_chunked_and_end_with_an_empty_frame() -> None:
    data = os.urandom(CHUNK_SIZE * 2 + 1)
    frames = frames_of(b"".join(encode_stream(FrameType.STDIN, 4, data)), 100_000)
    assert [len(frame.payload) for frame in frames] == [CHUNK_SIZE, CHUNK_SIZE, 1, 0]
    assert b"".join(frame.payload for frame in frames) == data


def test_run_requests_carry_timeout_cwd_command_and_environment() -> None:
    (frame,) = frames_of(encode_run(5, "echo hi", 1500, "/tmp", {"A": "1 2"}), 1000)
    assert frame.type == FrameType.RUN and frame.request_id == 5
    assert frame.payload == struct.pack("<II", 1500, 0) + b"\0/tmp\0echo hi\0A=1 2\0"
    with pytest.raises(ValueError, match="NUL"):
        encode_run(6, "a\0b", 0)


def test_oversized_payloads_are_refused() -> None:
    with pytest.raises(ValueError, match="over"):
        encode(FrameType.DATA, 1, b"x" * (MAX_PAYLOAD + 1))
    assert len(encode(FrameType.DATA, 1, b"x")) == HEADER_SIZE + 1


def test_exit_payloads() -> None:
    assert decode_exit(struct.pack("<iI", -9, 1)) == (-9, True)
    assert decode_exit(struct.pack("<iI", 3, 0)) == (3, False)


def test_output_moves_to_a_file_past_its_memory_limit(tmp_path: Path) -> None:
    output = CommandOutput(memory_limit=1000, spill_dir=tmp_path)
    output.write(b"a" * 600)
    assert not output.spilled
    output.write(b"b" * 600)
    assert output.spilled and output.size == len(output) == 1200
    assert output.read_bytes() == b"a" * 600 + b"b" * 600
    with output.open() as first, output.open() as second:
        assert first.read(600) == b"a" * 600
        assert second.read(3) == b"aaa", "each reader has its own offset"
    assert list(tmp_path.iterdir()) == [], "the spill file is unlinked"


@pytest.mark.parametrize("size", [10, 5000])
def test_an_output_let_go_closes_its_buffer_without_a_warning(size: int, tmp_path: Path) -> None:
    output = CommandOutput(memory_limit=1000, spill_dir=tmp_path)
    output.write(b"x" * size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del output
        gc.collect()
    assert [str(warning.message) for warning in caught] == []


def test_ready_and_pong_carry_the_setup_status_then_the_agents_features() -> None:
    assert decode_hello(b"0\0klog") == ("0", frozenset({"klog"}))
    # An agent from before features: the status alone, and nothing beyond the first requests.
    assert decode_hello(b"1") == ("1", frozenset())
    assert decode_hello(b"") == ("-", frozenset())
