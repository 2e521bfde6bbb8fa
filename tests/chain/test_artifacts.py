"""The committed artifacts are exactly what the offline toolchain builds from contracts/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backend.chain.compiler import (
    ARTIFACTS_DIR,
    CONTRACTS_DIR,
    Artifact,
    compile_all,
    load_artifact,
    stale_contracts,
    write_artifacts,
)


@pytest.fixture(scope="module")
def fresh() -> dict[str, Artifact]:
    return compile_all()


def test_committed_artifacts_are_current(fresh: dict[str, Artifact]) -> None:
    stale = stale_contracts(fresh)
    assert stale == [], f"stale artifacts {stale}: run `make compile` (scripts/compile_contracts.py)"


def test_artifact_records_compiler_settings_and_sources(fresh: dict[str, Artifact]) -> None:
    token = load_artifact("TestStablecoin")
    assert token.compiler_version.startswith("0.8.37+commit.")
    assert token.settings["evmVersion"] == "cancun"
    assert "contracts/TestStablecoin.sol" in token.source_hashes
    assert "@openzeppelin/contracts/token/ERC20/ERC20.sol" in token.source_hashes
    assert "contracts/V2GSettlement.sol" not in token.source_hashes  # only its own dependencies
    assert token.bytecode.startswith("0x60") and token.deployed_bytecode.startswith("0x60")


def test_stale_contracts_names_changed_source_and_recompile_clears_it(
    fresh: dict[str, Artifact], tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    write_artifacts(fresh, artifacts)
    sources = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, sources)
    changed = sources / "TestStablecoin.sol"
    changed.write_text(changed.read_text().replace("Six decimals", "Six decimals (edited)"))

    edited = compile_all(sources)
    assert stale_contracts(edited, artifacts) == ["TestStablecoin"]

    write_artifacts(edited, artifacts)
    assert stale_contracts(edited, artifacts) == []


def test_stale_contracts_names_missing_and_removed_artifacts(
    fresh: dict[str, Artifact], tmp_path: Path
) -> None:
    write_artifacts(fresh, tmp_path)
    (tmp_path / "TestStablecoin.json").unlink()
    (tmp_path / "Removed.json").write_text((ARTIFACTS_DIR / "TestStablecoin.json").read_text())
    assert stale_contracts(fresh, tmp_path) == ["Removed", "TestStablecoin"]
