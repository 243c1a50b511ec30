"""Text that PostgreSQL can store, and the bounds on what the service keeps of an Engine's words."""

from __future__ import annotations

from typing import Any

NUL = "\x00"
REPLACEMENT = "\ufffd"  # what a NUL becomes: PostgreSQL text and jsonb cannot hold NUL

MAX_ENGINE_ID = 128  # the read tables' engine id columns are varchar(128)
MAX_RESULT_BYTES = 65_536  # an agent's result as JSON; larger ones keep a preview
MAX_ERROR_CHARS = 2_000  # an agent's error text
MAX_MESSAGE_CHARS = 65_536  # a log line's message
MAX_SOURCE_CHARS = 64  # a log line's source
MAX_LEVEL_CHARS = 16  # a log line's level word
MAX_EXTRA_BYTES = 16_384  # a log line's extra data as JSON; larger ones keep a preview
MAX_NAME_CHARS = 128  # task, scheme and agent load names
MAX_SHORT_NAME_CHARS = 64  # short names: sides, operators


def without_nul(value: Any) -> Any:
    """The value with NUL characters replaced, in strings, dict keys and nested lists."""
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT)
    if isinstance(value, dict):
        return {without_nul(str(k)): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value
