"""Offline Solidity compilation through py-solc-x driving the npm ``solc`` (solc-js).

py-solc-x cannot download a native solc on a machine without internet access, so
it is pointed at ``tools/solc``: a small Node executable of this project's that
answers ``--version`` and ``--standard-json`` with the solc-js package from
``node_modules``.

Artifacts are generated files under ``backend/chain/artifacts/<Contract>.json``
holding the ABI, creation and runtime bytecode, the compiler version, the
settings and the keccak256 of every source the contract was built from
(from solc's metadata). Nothing here runs
at import time; ``scripts/compile_contracts.py`` writes the files and a test
checks that the committed ones are current.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import solcx

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = REPO_ROOT / "contracts"
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
SOLC_EXECUTABLE = REPO_ROOT / "tools" / "solc"
NODE_MODULES = REPO_ROOT / "node_modules"

#: Compiler settings shared by every build; part of each artifact.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 600},
    "evmVersion": "cancun",
    "viaIR": False,
    "outputSelection": {
        "*": {
            "*": ["abi", "metadata", "storageLayout", "evm.bytecode.object", "evm.deployedBytecode.object"]
        },
    },
}


class CompilationError(RuntimeError):
    """solc reported errors; the message lists them with file and line."""


class ToolchainMissingError(RuntimeError):
    """The Node toolchain (node_modules/solc) is not installed: run ``make install``."""


@dataclass(frozen=True)
class Artifact:
    """One compiled contract as stored under ``backend/chain/artifacts``."""

    contract_name: str
    source_path: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    settings: dict[str, Any]
    source_hashes: dict[str, str]
    #: State variables in storage order: label, slot, byte offset, type.
    storage_layout: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "contractName": self.contract_name,
            "sourcePath": self.source_path,
            "compilerVersion": self.compiler_version,
            "settings": self.settings,
            "sourceHashes": self.source_hashes,
            "abi": self.abi,
            "bytecode": self.bytecode,
            "deployedBytecode": self.deployed_bytecode,
            "storageLayout": self.storage_layout,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            contract_name=data["contractName"],
            source_path=data["sourcePath"],
            abi=data["abi"],
            bytecode=data["bytecode"],
            deployed_bytecode=data["deployedBytecode"],
            compiler_version=data["compilerVersion"],
            settings=data["settings"],
            source_hashes=data["sourceHashes"],
            storage_layout=data.get("storageLayout", []),  # absent in artifacts of older builds
        )


def project_sources(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, Path]:
    """Every ``.sol`` file under ``contracts_dir``, keyed as ``contracts/<relative path>``."""
    return {
        "contracts/" + path.relative_to(contracts_dir).as_posix(): path
        for path in sorted(contracts_dir.rglob("*.sol"))
    }


def compiler_version() -> str:
    """The full solc-js version string, e.g. ``0.8.37+commit.f401782d...``."""
    if not (NODE_MODULES / "solc").is_dir():
        raise ToolchainMissingError(f"{NODE_MODULES / 'solc'} is missing: run `make install`")
    return str(solcx.wrapper.get_version_str_from_solc_binary(SOLC_EXECUTABLE)).strip()


def compile_all(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, Artifact]:
    """Compile every source under ``contracts_dir``; return deployable contracts by name."""
    version = compiler_version()
    sources = {name: {"content": path.read_text()} for name, path in project_sources(contracts_dir).items()}
    standard_input = {"language": "Solidity", "sources": sources, "settings": SETTINGS}
    logger.info("compiling %d sources with solc-js %s", len(sources), version)
    try:
        output = solcx.compile_standard(standard_input, solc_binary=SOLC_EXECUTABLE, allow_empty=True)
    except solcx.exceptions.SolcError as exc:
        raise CompilationError(str(exc)) from exc
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompilationError("\n".join(e.get("formattedMessage", e["message"]) for e in errors))
    artifacts: dict[str, Artifact] = {}
    for source_path, contracts in output.get("contracts", {}).items():
        if not source_path.startswith("contracts/"):
            continue
        for name, data in contracts.items():
            bytecode = data["evm"]["bytecode"]["object"]
            if not bytecode or not data["abi"]:  # interfaces, abstract contracts, internal libraries
                continue
            if name in artifacts:
                raise CompilationError(f"two contracts named {name}")
            artifacts[name] = Artifact(
                contract_name=name,
                source_path=source_path,
                abi=data["abi"],
                bytecode="0x" + bytecode,
                deployed_bytecode="0x" + data["evm"]["deployedBytecode"]["object"],
                compiler_version=version,
                settings=SETTINGS,
                source_hashes=_source_hashes(data["metadata"]),
                storage_layout=_storage_layout(data["storageLayout"]),
            )
    return artifacts


def _storage_layout(layout: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "label": v["label"],
            "slot": int(v["slot"]),
            "offset": int(v["offset"]),
            "type": layout["types"][v["type"]]["label"],
        }
        for v in layout["storage"]
    ]


def _source_hashes(metadata: str) -> dict[str, str]:
    """keccak256 of every source this contract was built from, as solc's metadata records them."""
    return {path: info["keccak256"] for path, info in sorted(json.loads(metadata)["sources"].items())}


def write_artifacts(artifacts: dict[str, Artifact], directory: Path = ARTIFACTS_DIR) -> list[Path]:
    """Write one JSON file per contract; remove artifacts of contracts that no longer exist."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, artifact in sorted(artifacts.items()):
        path = directory / f"{name}.json"
        path.write_text(json.dumps(artifact.to_json(), indent=1, sort_keys=True) + "\n")
        written.append(path)
    for stale in directory.glob("*.json"):
        if stale.stem not in artifacts:
            stale.unlink()
    return written


def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> Artifact:
    """Read a committed artifact by contract name."""
    path = directory / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no artifact for {name} at {path}: run scripts/compile_contracts.py")
    return Artifact.from_json(json.loads(path.read_text()))


def stale_contracts(fresh: dict[str, Artifact], directory: Path = ARTIFACTS_DIR) -> list[str]:
    """Names of contracts whose committed artifact differs from ``fresh`` (or is missing/extra)."""
    committed = {p.stem for p in directory.glob("*.json")}
    stale = sorted(committed ^ set(fresh))
    for name in sorted(set(fresh) & committed):
        if load_artifact(name, directory).to_json() != fresh[name].to_json():
            stale.append(name)
    return sorted(stale)
