"""msgspec transcoder for stored events: compact JSON, fast to decode in projections."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.persistence import Transcoder

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class MsgspecTranscoder(Transcoder):
    """Encodes event state as plain JSON; `timestamp` is the one datetime field.

    Event fields other than the library's `timestamp` are JSON-native values
    (ints, strings, lists, dicts), so no type tags are stored and any JSON
    reader (a projection, an auditor's script) can read the events.
    """

    def encode(self, obj: Any) -> bytes:
        return _encoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        state = _decoder.decode(data)
        ts = state.get("timestamp")
        if isinstance(ts, str):
            state["timestamp"] = datetime.fromisoformat(ts)
        return state


def decode_state(data: bytes) -> dict[str, Any]:
    """Decode stored event state without building domain objects (projections)."""
    state: dict[str, Any] = _decoder.decode(data)
    return state
