"""Streaming an archive object: gzip (members may be concatenated) to JSON Lines, in bounded steps.

At most READ_CHUNK compressed bytes are read and OUT_CHUNK decompressed bytes produced at a time, so
an object of any size is streamed in a few MB (a test holds it under 8 MB for a 50 MB object).
A stream that ends inside a gzip member raises `ArchiveError`; one that is not gzip, `zlib.error`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import IO

from eventstack.archive_layout import ArchiveError

READ_CHUNK = 256 << 10  # compressed bytes read from an object at a time
OUT_CHUNK = 1 << 20  # at most this many decompressed bytes per step


def gunzip_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """Decompress a gzip stream (members may be concatenated) in bounded steps."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False
    while chunk := stream.read(READ_CHUNK):
        buffer = chunk
        while buffer:
            if decompressor.eof:  # a new gzip member follows the last one
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            started = True
            out = decompressor.decompress(buffer, OUT_CHUNK)
            if out:
                yield out
            buffer = decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
    if started and not decompressor.eof:
        tail = decompressor.flush()
        if tail:
            yield tail
        if not decompressor.eof:
            raise ArchiveError("truncated gzip stream")


def iter_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The non-empty lines of a gzip JSON Lines stream, without their newlines."""
    pending = b""
    for chunk in gunzip_chunks(stream):
        data = pending + chunk if pending else chunk
        lines = data.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line and not line.isspace():
                yield line
    if pending and not pending.isspace():
        yield pending


def line_batches(stream: IO[bytes]) -> Iterator[list[bytes]]:
    """`iter_lines`, one list per decompressed chunk (the same lines, in order, and as bounded)."""
    pending = b""
    for chunk in gunzip_chunks(stream):
        data = pending + chunk if pending else chunk
        lines = data.split(b"\n")
        pending = lines.pop()
        batch = [line for line in lines if line and not line.isspace()]
        if batch:
            yield batch
    if pending and not pending.isspace():
        yield [pending]
