"""`v2g chain ...`: the local chains (the embedded chain's file and the managed anvil node)."""

from __future__ import annotations

import datetime as dt

import typer

from backend.cli.common import _data_dir, _platform, _policy
from backend.cli.options import ChainOpt, ExistingDbOpt
from backend.cli.output import console
from backend.cli.root import app

chain_app = typer.Typer(help="The local chains: the embedded chain's file and the managed anvil node.")
app.add_typer(chain_app, name="chain")


@chain_app.command("start")
def chain_start() -> None:
    """Start the managed anvil node in the background (state in <data dir>/chains/anvil); commands with
    --chain anvil and `v2g serve` with V2G_CHAIN=anvil use it until `v2g chain stop`."""
    from backend.chain.node import AnvilNode

    node = AnvilNode(_data_dir())
    running = node.info()
    info = node.start()
    word = "already running" if running is not None else "started"
    console.print(f"anvil {word}: pid {info.pid}, {info.url}, state {info.state}")


@chain_app.command("stop")
def chain_stop() -> None:
    """Stop the managed anvil node (it writes its state first)."""
    from backend.chain.node import AnvilNode

    info = AnvilNode(_data_dir()).stop()
    console.print(
        "no managed anvil is running"
        if info is None
        else f"anvil stopped (pid {info.pid}); state {info.state}"
    )


@chain_app.command("status")
def chain_status() -> None:
    """Where the local chains are: the embedded chain's file and head, the managed anvil node."""
    from backend.chain.client import Chain
    from backend.chain.embedded import ChainFileError
    from backend.chain.node import EMBEDDED_FILE, AnvilNode

    data = _data_dir()
    path = data / EMBEDDED_FILE
    if path.exists():
        try:
            with Chain.eth_tester(path, readonly=True) as embedded:
                head = embedded.w3.eth.get_block("latest")
            console.print(
                f"eth-tester: {path}, block {head['number']}, "
                f"{dt.datetime.fromtimestamp(int(head['timestamp']), dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
            )
        except ChainFileError as exc:
            console.print(f"eth-tester: {exc}")
    else:
        console.print(f"eth-tester: no chain yet ({path} is made by the first command that sends)")
    info = AnvilNode(data).info()
    console.print("anvil: not running" if info is None else f"anvil: running, pid {info.pid}, {info.url}")


@chain_app.command("recover")
def chain_recover(db: ExistingDbOpt, chain: ChainOpt = None) -> None:
    """Give a chain that lost blocks (a managed anvil killed between its saves, an embedded chain file
    restored from a copy) back what the database relies on: the transactions the platform journaled are
    sent again in order, every stored period is settled from where the chain now has it, then the event
    index is read again and reconciled. Exits 1 unless the reconciliation is OK."""
    from backend.app.recover import recover_chain

    with _platform(db, chain, write=True, strict=False) as platform:
        if platform.mismatch is not None:
            console.print(f"before: {platform.mismatch}", markup=False)
        result = recover_chain(platform, _policy(None))
    console.print(
        f"{result.journaled} journaled transaction(s): {result.on_chain} on chain, {result.replayed} sent "
        f"again; period(s) settled again: {', '.join(map(str, result.resettled)) or 'none'}; "
        f"chain head {result.head_before} → {result.head_after}"
    )
    for m in result.reconciliation.mismatches[:20]:
        console.print(f"[red]{m.kind}[/] period {m.period_id}: {m.detail}")
    console.print("reconciliation: " + ("OK" if result.reconciliation.ok else "NOT OK"))
    if not result.reconciliation.ok:
        raise typer.Exit(code=1)
