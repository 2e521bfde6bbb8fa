"""Deploy the token and the settlement contract with roles, and write the deployment record.

    python scripts/deploy.py --chain anvil|eth-tester|URL [--record FILE.json] [--liveness 3600]

Keys: local chains use their dev accounts; a JSON-RPC URL takes V2G_PRIVATE_KEYS
(admin, settler, auditor, meter; comma-separated) from the environment.
Re-running against a recorded deployment that is on chain changes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.chain.client import connect
from backend.chain.deploy import deploy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chain", default="eth-tester")
    parser.add_argument("--record", type=Path, default=None)
    parser.add_argument("--liveness", type=int, default=3600)
    parser.add_argument(
        "--token", default=None, help="use an existing ERC-20 instead of deploying the test token"
    )
    args = parser.parse_args()
    with connect(args.chain) as chain:
        record = deploy(chain, liveness_s=args.liveness, token_address=args.token, record_path=args.record)
    print(record.to_json(), end="")


if __name__ == "__main__":
    main()
