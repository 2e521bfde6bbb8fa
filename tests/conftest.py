"""Every test keeps the platform's data (local chains, deployment records) in its own directory."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _platform_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2G_DATA_DIR", str(tmp_path / "v2g-data"))
    monkeypatch.setenv("V2G_DEPLOYMENTS_DIR", str(tmp_path / "deployments"))
