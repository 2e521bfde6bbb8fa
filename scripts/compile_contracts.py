"""Compile contracts/ offline (solc-js via py-solc-x) into backend/chain/artifacts/."""

from __future__ import annotations

import json
import logging
import time

from backend.chain.compiler import ARTIFACTS_DIR, compile_all, stale_contracts, write_artifacts


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    artifacts = compile_all()
    changed = stale_contracts(artifacts)
    paths = write_artifacts(artifacts)
    seconds = time.perf_counter() - started
    for path in paths:
        print(f"wrote {path.relative_to(ARTIFACTS_DIR.parents[2])}")
    print(json.dumps({"contracts": sorted(artifacts), "changed": changed, "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
