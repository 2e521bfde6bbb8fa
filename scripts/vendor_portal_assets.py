"""Vendor the portal's browser libraries from node_modules into backend/portal/static/vendor/.

Nothing is downloaded: the files come from the npm packages pinned in package.json (installed by
``npm ci``). Three are copied as published (ethers, Chart.js, htmx); ``@openzeppelin/merkle-tree`` ships
CommonJS only, so esbuild (also pinned) bundles the three functions the portal uses into one browser
script. ``MANIFEST.json`` records each file's package, version, source and SHA-384, so anyone can check
the scripts a page runs against the published packages (``--check`` does that here: exit 1 on any
difference).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "node_modules"
VENDOR = ROOT / "backend" / "portal" / "static" / "vendor"

COPIED = {
    "ethers.umd.min.js": ("ethers", "dist/ethers.umd.min.js"),
    "chart.umd.min.js": ("chart.js", "dist/chart.umd.min.js"),
    "htmx.min.js": ("htmx.org", "dist/htmx.min.js"),
}
MERKLE_FILE = "merkle-tree.min.js"
MERKLE_ENTRY = """\
export { StandardMerkleTree } from "@openzeppelin/merkle-tree";
export { standardLeafHash } from "@openzeppelin/merkle-tree/dist/hashes";
export { processProof } from "@openzeppelin/merkle-tree/dist/core";
"""


def version_of(package: str) -> str:
    return str(json.loads((NODE_MODULES / package / "package.json").read_text())["version"])


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def bundle_merkle_tree() -> bytes:
    """``@openzeppelin/merkle-tree`` as one IIFE script defining ``window.OZMerkleTree``."""
    esbuild = NODE_MODULES / ".bin" / "esbuild"
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        entry = Path(tmp) / "merkle-entry.mjs"
        entry.write_text(MERKLE_ENTRY)
        out = Path(tmp) / MERKLE_FILE
        subprocess.run(
            [
                str(esbuild),
                str(entry),
                "--bundle",
                "--minify",
                "--format=iife",
                "--global-name=OZMerkleTree",
                "--platform=browser",
                "--target=es2020",
                "--legal-comments=inline",
                f"--outfile={out}",
                "--log-level=warning",
            ],
            check=True,
            cwd=ROOT,
        )
        return out.read_bytes()


def build() -> dict[str, bytes]:
    files = {name: (NODE_MODULES / pkg / path).read_bytes() for name, (pkg, path) in COPIED.items()}
    files[MERKLE_FILE] = bundle_merkle_tree()
    return files


def manifest(files: dict[str, bytes]) -> dict[str, dict[str, str]]:
    sources = {name: (pkg, path) for name, (pkg, path) in COPIED.items()}
    sources[MERKLE_FILE] = (
        "@openzeppelin/merkle-tree",
        f"bundled by esbuild {version_of('esbuild')} (StandardMerkleTree, standardLeafHash, processProof)",
    )
    return {
        name: {
            "package": sources[name][0],
            "version": version_of(sources[name][0]),
            "source": sources[name][1],
            "integrity": sri(data),
        }
        for name, data in sorted(files.items())
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing; exit 1 on a difference")
    args = parser.parse_args()
    files = build()
    wanted = {**files, "MANIFEST.json": (json.dumps(manifest(files), indent=2) + "\n").encode()}
    if args.check:
        stale = [
            n for n, data in wanted.items() if not (VENDOR / n).is_file() or (VENDOR / n).read_bytes() != data
        ]
        for name in stale:
            print(f"differs from node_modules: {VENDOR.relative_to(ROOT) / name}")
        print(json.dumps({"files": len(wanted), "stale": stale}))
        return 1 if stale else 0
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name, data in wanted.items():
        (VENDOR / name).write_bytes(data)
        print(f"wrote {VENDOR.relative_to(ROOT) / name} ({len(data):,} bytes)")
    print(json.dumps({"files": len(wanted), "bytes": sum(len(d) for d in wanted.values())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
