"""A decoder process: ``python -m transforms.decoding.worker``, started by ``transforms.decoding.pool``.

It reads ``DecodeRequest``s from stdin and writes each one's messages to
stdout (``transforms.decoding.messages``), one request at a time, until stdin
closes.  It imports no TensorFlow and holds no model: a few MB of decoder
state plus the chunk being sent.
"""

from __future__ import annotations

import os
import signal
import sys

from transforms.decoding.messages import decode_messages, read_message, write_message


def main() -> int:
    # Replies own the real stdout; anything printed by accident goes to stderr instead of
    # corrupting the stream the parent parses.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Ctrl-C reaches the whole process group: the parent decides what happens, and this process
    # ends when the parent closes its stdin (or dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    try:
        while (request := read_message(requests)) is not None:
            for message in decode_messages(request):
                write_message(replies, message)
    except BrokenPipeError:  # the parent went away mid-reply
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
