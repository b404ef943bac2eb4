"""Decode limits for untrusted request bodies and the per-request budget that enforces them."""

from __future__ import annotations

from dataclasses import dataclass

from marserve.errors import InvalidInput, PayloadTooLarge


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds applied while decoding one request; every codec takes one of these.

    ``max_elements`` applies per tensor and per request and is checked from the declared shape
    before anything is allocated; ``max_decoded_bytes`` bounds the decoded tensor bytes of a
    request (exceeding it is ``PayloadTooLarge``, 413).
    """

    max_json_depth: int = 100
    max_elements: int = 1 << 26
    max_decoded_bytes: int = 1 << 30
    max_inputs: int = 256
    max_outputs: int = 256

    def __post_init__(self) -> None:
        for name in ("max_json_depth", "max_elements", "max_decoded_bytes", "max_inputs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DecodeLimits.{name} must be a positive integer, got {value!r}")
        if isinstance(self.max_outputs, bool) or self.max_outputs < 0:
            raise ValueError(f"DecodeLimits.max_outputs must be >= 0, got {self.max_outputs!r}")


DEFAULT_LIMITS = DecodeLimits()


class DecodeBudget:
    """What one request may still decode: elements and bytes, across all of its tensors."""

    __slots__ = ("bytes_left", "elements_left", "limits")

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.elements_left = limits.max_elements
        self.bytes_left = limits.max_decoded_bytes

    def check_elements(self, what: str, count: int) -> None:
        """Reject a tensor of ``count`` elements before it is allocated (no charge yet)."""
        if count > self.limits.max_elements:
            raise InvalidInput(
                f"{what}: element count {count} exceeds maximum {self.limits.max_elements}"
            )
        if count > self.elements_left:
            raise InvalidInput(
                f"{what}: element count of the request exceeds maximum {self.limits.max_elements}"
            )

    def check_bytes(self, what: str, nbytes: int) -> None:
        """Reject ``nbytes`` of decoded data before it is allocated (no charge yet)."""
        if nbytes > self.bytes_left:
            raise PayloadTooLarge(
                f"{what}: decoded size exceeds limit of {self.limits.max_decoded_bytes} bytes"
            )

    def charge(self, what: str, count: int, nbytes: int) -> None:
        """Check, then take ``count`` elements and ``nbytes`` bytes out of the budget."""
        self.check_elements(what, count)
        self.check_bytes(what, nbytes)
        self.elements_left -= count
        self.bytes_left -= nbytes
