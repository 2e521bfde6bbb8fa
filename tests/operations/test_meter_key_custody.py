"""The meter's key lives in the metering service alone: on a chain that is not local no settler, API or
command loads it, whatever its environment holds (an anvil with another chain id than 31337, reached by
its JSON-RPC URL, stands in for such a chain)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.chain.client import Chain, anvil_dev_keys
from backend.metering.reach import MeterKeyInSettlerError, MeterUrlRequiredError, meter_url_for
from backend.platform import MeterKeyOutsideMeterError, Platform, is_local, load_actors

pytestmark = pytest.mark.anvil


@pytest.fixture
def rpc_platform(tmp_path: Path) -> Iterator[Platform]:
    node = Chain.anvil(chain_id=4242)
    try:
        keys = ["0x" + bytes(a.key).hex() for a in anvil_dev_keys(4)]
        assert node.url is not None
        chain = Chain.rpc(node.url, keys)
        assert chain.kind == "rpc" and not is_local(chain)
        with Platform.open(
            f"sqlite:///{tmp_path / 'v2g.sqlite'}",
            chain,
            data_dir=tmp_path / "data",
            deployments_dir=tmp_path / "dep",
        ) as platform:
            yield platform
    finally:
        node.close()


def test_the_meter_key_is_never_loaded_outside_the_metering_service(
    rpc_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = anvil_dev_keys(4)[3]
    with pytest.raises(MeterKeyOutsideMeterError, match="metering service alone"):
        rpc_platform.actors(("settler", "meter"))
    # a settler whose environment holds the meter key does not load it ...
    monkeypatch.setenv("V2G_METER_KEY", "0x" + bytes(meter.key).hex())
    actors = load_actors(rpc_platform.chain, ("settler",))
    assert actors.settler.address == anvil_dev_keys(4)[1].address
    assert actors.meter.address != meter.address  # a placeholder that cannot sign for the deployment
    # ... and refuses to settle metered energy with it in its environment, or without a meter's URL
    with pytest.raises(MeterKeyInSettlerError, match="V2G_METER_KEY is set in the settler's environment"):
        meter_url_for(rpc_platform, "http://127.0.0.1:1")
    monkeypatch.delenv("V2G_METER_KEY")
    with pytest.raises(MeterUrlRequiredError, match="set V2G_METER_URL"):
        meter_url_for(rpc_platform, None)
    assert meter_url_for(rpc_platform, "http://127.0.0.1:8700") == "http://127.0.0.1:8700"


def test_a_deployment_off_a_local_chain_takes_the_meters_address_never_its_key(
    rpc_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eth_account import Account

    from backend.chain.contracts import SettlementClient

    meter_address = Account.create().address
    monkeypatch.setenv("V2G_METER_ADDRESS", meter_address)
    # a meter key in the environment is not read: the deployment trusts the address it was given
    monkeypatch.setenv("V2G_METER_KEY", "0x" + "ab" * 32)
    record = rpc_platform.ensure_deployment()
    assert record.meter == meter_address
    assert SettlementClient.at(rpc_platform.chain, record.settlement).meter() == meter_address
    with pytest.raises(MeterKeyOutsideMeterError, match="metering service's alone"):
        rpc_platform.chain.accounts[3].sign_message  # noqa: B018 - the attribute is what is refused


def test_a_metering_service_started_by_a_settler_gets_no_other_roles_key() -> None:
    from backend.metering.reach import _settler_secret

    refused = ["V2G_PRIVATE_KEYS", "V2G_SETTLER_KEY", "V2G_ADMIN_KEY", "V2G_AUDITOR_KEYSTORE"]
    kept = ["V2G_METER_KEY", "V2G_METER_KEYSTORE", "V2G_KEYSTORE_PASSWORD", "V2G_DATA_DIR", "PATH"]
    assert [_settler_secret(n) for n in refused + kept] == [True] * len(refused) + [False] * len(kept)
