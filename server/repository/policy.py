"""model_version_policy: which of the versions on disk are served."""

from __future__ import annotations

from typing import Any, Iterable


def select_versions(policy: dict[str, Any], on_disk: Iterable[int]) -> list[int]:
    """Versions to serve, newest first. `specific` versions missing on disk are simply not served."""
    versions = sorted(set(on_disk), reverse=True)
    if "all" in policy:
        return versions
    if "specific" in policy:
        wanted = set(policy["specific"]["versions"])
        return [v for v in versions if v in wanted]
    return versions[: policy["latest"]["num_versions"]]
