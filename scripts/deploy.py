"""Deploy the token and the settlement contract with roles for a database, and record the deployment.

    python scripts/deploy.py [--db URL] [--chain anvil|eth-tester|URL] [--liveness 3600] [--token ADDRESS]

The same operation as `v2g deploy` (one service layer): the record goes into the database and into
deployments/<chain id>/<contract>.json; re-running changes nothing. Keys: local chains use their dev
accounts; a JSON-RPC URL takes V2G_<ROLE>_KEY (ADMIN, SETTLER, AUDITOR, METER) or V2G_PRIVATE_KEYS
(admin, settler, auditor, meter; comma-separated) from the environment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.config import Settings
from backend.platform import Platform


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    settings = Settings()
    parser.add_argument("--db", default=settings.database_url)
    parser.add_argument("--chain", default=settings.chain)
    parser.add_argument("--liveness", type=int, default=settings.liveness_s)
    parser.add_argument(
        "--token", default=None, help="use an existing ERC-20 instead of deploying the test token"
    )
    args = parser.parse_args()
    with Platform.open(
        args.db,
        args.chain,
        data_dir=Path(settings.data_dir),
        deployments_dir=Path(settings.deployments_dir),
    ) as platform:
        platform.ensure_deployment(liveness_s=args.liveness, token_address=args.token)
        assert platform.stored is not None
        print(platform.stored.to_json(), end="")


if __name__ == "__main__":
    main()
