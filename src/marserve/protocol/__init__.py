"""Protocol codecs: request bytes -> domain types -> response bytes, for every wire format."""

from __future__ import annotations

from marserve.protocol.limits import DEFAULT_LIMITS, DecodeLimits

__all__ = ["DEFAULT_LIMITS", "DecodeLimits"]
