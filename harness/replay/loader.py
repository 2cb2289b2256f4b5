"""Open a recording whatever wrote it: our JSON Lines, or a HAR file (told apart by content)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.replay.format import Recording, RecordingError, is_header_line, read_jsonl
from harness.replay.har import is_har, read_har


def load_recording(path: str | os.PathLike[str]) -> Recording:
    """The exchanges in ``path``; :class:`RecordingError` when it is neither format."""
    name = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise RecordingError(f"{name}: {exc.strerror or exc}") from None
    first = text.lstrip().split("\n", 1)[0]
    try:
        head = json.loads(first)
    except ValueError:
        head = None
    if is_header_line(head):
        # Not splitlines(): U+2028, U+0085 and friends may stand unescaped inside JSON strings.
        return read_jsonl(text.split("\n"), name)
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if is_har(whole):
        return read_har(whole, name)
    raise RecordingError(
        f"{name}: neither a kafkaupstream recording (JSON Lines starting with a "
        '{"format": "kafkaupstream-replay", ...} line) nor a HAR file ({"log": {"entries": ...}})'
    )
