"""The Engine client's query strings: every value percent-encoded as RFC 3986 asks."""

from __future__ import annotations

import string
from urllib.parse import quote

from deduction.adapters.engine.http import _query


def test_a_query_value_is_encoded_as_quote_encodes_it_whether_or_not_it_needs_it() -> None:
    """Values with nothing to encode (timestamps, numbers) are sent as they are; any other
    is percent-encoded exactly as `quote(value, safe=":")` does."""
    values = [
        "2025-01-01T00:00:00.000Z",
        "2025-01-01T02:00:00.5+02:00",
        "20000",
        "",
        "a&limit=1 #é",
        "~._-:/?",
        *string.printable,
        "\x00",
        "ü",
    ]
    for value in values:
        assert _query({"since": value}) == f"since={quote(value, safe=':')}", value
        assert _query({value: "1"}) == f"{quote(value, safe='')}=1", value
