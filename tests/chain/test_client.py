"""Chain selection by configuration, keys from the environment or a keystore, idempotent resend."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from backend.chain.client import Chain, account_from_keystore, connect
from backend.chain.contracts import TokenClient
from backend.chain.errors import ChainError


def test_connect_refuses_an_unknown_chain() -> None:
    with pytest.raises(ChainError, match="unknown chain"):
        connect("mainnet-please")


def test_keystore_account_needs_its_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = Account.create()
    keystore = tmp_path / "key.json"
    import json

    keystore.write_text(json.dumps(Account.encrypt(account.key, "s3cret")))
    monkeypatch.delenv("V2G_KEYSTORE_PASSWORD", raising=False)
    with pytest.raises(ChainError, match="V2G_KEYSTORE_PASSWORD"):
        account_from_keystore(keystore)
    monkeypatch.setenv("V2G_KEYSTORE_PASSWORD", "s3cret")
    assert account_from_keystore(keystore).address == account.address


@pytest.mark.anvil
def test_rpc_chain_takes_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with Chain.anvil() as anvil:
        url = anvil.w3.provider.endpoint_uri  # type: ignore[attr-defined]
        keys = ",".join("0x" + bytes(a.key).hex() for a in anvil.accounts[:4])
        monkeypatch.setenv("V2G_PRIVATE_KEYS", keys)
        remote = connect(url)
        assert remote.kind == "rpc" and [a.address for a in remote.accounts] == [
            a.address for a in anvil.accounts[:4]
        ]
        token = TokenClient.deploy(remote, remote.accounts[0])
        assert token.balance_of(remote.accounts[0].address) == 0


def test_resending_a_signed_transaction_executes_it_once() -> None:
    chain = Chain.eth_tester()
    admin = chain.accounts[0]
    token = TokenClient.deploy(chain, admin)
    signed = chain.sign_call(token.contract.functions.mint(admin.address, 5), admin)
    first = chain.send_raw(signed.raw)
    chain.wait(first)
    second = chain.send_raw(signed.raw)  # the same bytes again after a "crash"
    assert bytes(second) == bytes(first)
    assert token.balance_of(admin.address) == 5


def test_a_stored_transaction_whose_nonce_was_taken_is_reported_stale() -> None:
    from backend.chain.errors import StaleNonceError

    chain = Chain.eth_tester()
    admin = chain.accounts[0]
    token = TokenClient.deploy(chain, admin)
    stored = chain.sign_call(token.contract.functions.mint(admin.address, 5), admin)
    chain.send(token.contract.functions.mint(admin.address, 7), admin, nonce=stored.nonce)  # takes the nonce
    with pytest.raises(StaleNonceError):
        chain.send_raw(stored.raw)
    assert token.balance_of(admin.address) == 7
