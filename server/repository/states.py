"""Per-version lifecycle states (TF Serving numbering) and their KServe repository-index names."""

from __future__ import annotations

from enum import Enum


class VersionState(str, Enum):
    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"

    @property
    def kserve(self) -> str:
        return _KSERVE[self]


_KSERVE = {
    VersionState.START: "LOADING",
    VersionState.LOADING: "LOADING",
    VersionState.AVAILABLE: "READY",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.END: "UNAVAILABLE",
}


class ErrorCode(str, Enum):
    """Status codes shown with a state (google.rpc / TF Serving names)."""

    OK = "OK"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # config.json rejected
    FAILED_PRECONDITION = "FAILED_PRECONDITION"  # files missing, task cannot be inferred
    UNKNOWN = "UNKNOWN"  # the pipeline failed to load
    CANCELLED = "CANCELLED"  # unloaded by request
