"""Bad input at the `v2g` command line: one line `ErrorName: what and where`, exit code 2, no traceback.

Every case here is refused before any work starts (no solve, no chain, no database written), so the
whole file runs in seconds. `--debug` shows the traceback instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from backend.cli import app
from backend.cli.errors import InvalidDateError

runner = CliRunner()
V2G = Path(sys.executable).parent / "v2g"


def one_line(result: Result) -> str:
    """The single non-empty line of a refused command's output (stdout and stderr together)."""
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def assert_refused(args: list[str], error: str, *, contains: str = "") -> str:
    result = runner.invoke(app, args)
    line = one_line(result)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert line.startswith(f"{error}: "), line
    assert contains in line, line
    return line


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as solving or settling."""

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the work started before the input was checked")

    monkeypatch.setattr("scheduler.baselines.run_strategies", forbidden)
    monkeypatch.setattr("scheduler.solve.solve", forbidden)
    monkeypatch.setattr("backend.app.settle.settle_simulated", forbidden)


# --- dates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (["schedule", "--date", "2023-13-45"], "--date 2023-13-45: month must be in 1..12"),
        (["schedule", "--date", "yesterday"], "--date yesterday: not a date"),
        (["demo", "--date", "2023-02-30"], "--date 2023-02-30: day is out of range for month"),
        (["settle", "--date", ""], "--date : not a date"),
    ],
)
def test_a_malformed_date_is_named(args: list[str], contains: str, no_work: None) -> None:
    assert_refused(args, "InvalidDateError", contains=contains)


@pytest.mark.parametrize(
    "args",
    [
        ["schedule", "--date", "1999-01-01"],
        ["schedule", "--date", "2031-01-01"],
        ["demo", "--date", "0001-01-01"],
        ["settle", "--date", "9999-12-31"],
    ],
)
def test_a_date_outside_the_price_data_is_named(args: list[str], no_work: None) -> None:
    line = assert_refused(args, "DateOutOfRangeError", contains=f"--date {args[2]}: not in the price data")
    assert "2015-01-01" in line


# --- numbers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (["schedule", "--evs", "0"], "--evs 0: must be at least 1"),
        (["schedule", "--evs", "-5"], "--evs -5: must be at least 1"),
        (["schedule", "--evs", "abc"], "--evs abc: not a whole number"),
        (["schedule", "--evs", "2.5"], "--evs 2.5: not a whole number"),
        (["schedule", "--gap", "0"], "--gap 0: must be strictly between 0 and 1"),
        (["schedule", "--gap", "1"], "--gap 1: must be strictly between 0 and 1"),
        (["schedule", "--gap", "nan"], "--gap nan"),
        (["schedule", "--gap", "x"], "--gap x: not a number"),
        (["schedule", "--v2g-share", "1.5"], "--v2g-share 1.5: must be from 0 to 1"),
        (["schedule", "--v2g-share", "-inf"], "--v2g-share -inf"),
        (["schedule", "--seed", "-1"], "--seed -1: must be at least 0"),
        (["settle", "--evs", "20001"], "--evs 20001: must be from 1 to 20,000"),
        (["settle", "--fee-bps", "-1"], "--fee-bps -1: must be from 0 to 10,000"),
        (["settle", "--fee-bps", "10001"], "--fee-bps 10001"),
        (["demo", "--evs", "0"], "--evs 0"),
        (["demo", "--evs", "5001"], "--evs 5001: must be from 1 to 5,000"),
        (["deploy", "--liveness", "0"], "--liveness 0: must be from 60 to 2,592,000"),
        (["audit", "proof", "--period", "-1", "--entry", "0"], "--period -1"),
        (["audit", "proof", "--period", "1", "--entry", str(2**63)], f"--entry {2**63}"),
        (["serve", "--port", "0"], "--port 0: must be from 1 to 65,535"),
        (["serve", "--port", "70000"], "--port 70000"),
    ],
)
def test_a_number_out_of_range_is_named(args: list[str], contains: str, no_work: None) -> None:
    assert_refused(args, "InvalidNumberError", contains=contains)


# --- paths ------------------------------------------------------------------------------------------


def test_a_missing_price_file_is_named(no_work: None) -> None:
    assert_refused(
        ["schedule", "--prices", "/nonexistent.csv"],
        "InputFileNotFoundError",
        contains="--prices /nonexistent.csv: no such file",
    )


def test_a_price_path_that_is_a_directory_is_named(tmp_path: Path, no_work: None) -> None:
    assert_refused(["schedule", "--prices", str(tmp_path)], "InvalidPathError", contains="not a file")


@pytest.mark.parametrize("option", ["--plot", "--trades"])
def test_an_output_path_is_checked_before_the_solve(option: str, tmp_path: Path, no_work: None) -> None:
    assert_refused(
        ["schedule", "--evs", "5", option, "/nonexistent/dir/x.png"],
        "InvalidPathError",
        contains=f"{option} /nonexistent/dir/x.png: directory /nonexistent/dir does not exist",
    )
    assert_refused(["schedule", option, str(tmp_path)], "InvalidPathError", contains="is a directory")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_refused(
        ["schedule", option, str(blocker / "x.csv")], "InvalidPathError", contains="is not a directory"
    )


def test_a_plot_must_be_a_format_the_plot_writes(tmp_path: Path, no_work: None) -> None:
    assert_refused(
        ["schedule", "--plot", str(tmp_path / "day.foo")],
        "InvalidPathError",
        contains="the file name must end in .png, .svg, .pdf",
    )


def test_a_deployment_record_path_is_checked_before_the_chain_starts(tmp_path: Path) -> None:
    assert_refused(
        ["deploy", "--record", "/nonexistent/dir/record.json"],
        "InvalidPathError",
        contains="--record /nonexistent/dir/record.json",
    )
    record = tmp_path / "record.json"
    for text in ("not json", '{"chain": 1}', "[]"):
        record.write_text(text)
        assert_refused(
            ["deploy", "--record", str(record)],
            "InvalidRecordError",
            contains=f"--record {record}: not a deployment record",
        )


# --- databases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error", "contains"),
    [
        (["settle", "--db", "notaurl"], "InvalidDatabaseUrlError", "--db notaurl: not a database URL"),
        (["keys", "create", "--role", "auditor", "--db", "foo://x"], "InvalidDatabaseUrlError", "dialect"),
        (
            ["demo", "--db", "sqlite:////nonexistent/dir/x.sqlite"],
            "DatabaseNotFoundError",
            "--db sqlite:////nonexistent/dir/x.sqlite: directory /nonexistent/dir does not exist",
        ),
        (
            ["audit", "statement", "--owner", "owner-00001", "--db", "sqlite:////nonexistent/dir/x.sqlite"],
            "DatabaseNotFoundError",
            "directory /nonexistent/dir does not exist",
        ),
    ],
)
def test_an_unusable_database_url_is_named(args: list[str], error: str, contains: str, no_work: None) -> None:
    assert_refused(args, error, contains=contains)


def test_a_database_to_read_must_exist_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    for args in (
        ["audit", "statement", "--owner", "owner-00001"],
        ["audit", "proof", "--period", "1", "--entry", "0"],
        ["audit", "reconcile", "--chain", "eth-tester"],
    ):
        assert_refused(
            [*args, "--db", f"sqlite:///{missing}"], "DatabaseNotFoundError", contains="no database file"
        )
    assert not missing.exists()


def test_a_database_that_does_not_answer_is_named(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database, " * 100)
    assert_refused(
        ["keys", "create", "--role", "auditor", "--db", f"sqlite:///{garbage}"],
        "DatabaseUnreachableError",
        contains="file is not a database",
    )
    url = f"postgresql+psycopg://v2g:secret@127.0.0.1:{closed_port()}/v2g"
    line = assert_refused(
        ["keys", "create", "--role", "auditor", "--db", url], "DatabaseUnreachableError", contains="--db "
    )
    assert "secret" not in line


def test_a_database_without_a_deployment_is_named(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    assert runner.invoke(app, ["keys", "create", "--role", "auditor", "--db", db]).exit_code == 0
    assert_refused(["audit", "statement", "--owner", "owner-00001", "--db", db], "NoDeploymentError")


# --- chains --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "error", "contains"),
    [
        ("bogus", "InvalidChainError", "--chain bogus: not a chain"),
        ("ftp://host", "InvalidChainError", "not a chain"),
        ("http://", "InvalidChainError", "not a chain"),
        ("http://host:notaport", "InvalidChainError", "malformed port"),
        ("ws://127.0.0.1:8546", "InvalidChainError", "WebSocket"),
    ],
)
def test_an_unknown_chain_is_named(spec: str, error: str, contains: str, no_work: None) -> None:
    assert_refused(["settle", "--chain", spec], error, contains=contains)
    assert_refused(["deploy", "--chain", spec], error, contains=contains)


def test_a_chain_that_does_not_answer_is_named(tmp_path: Path, no_work: None) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert_refused(
        ["settle", "--chain", url, "--evs", "2", "--db", f"sqlite:///{tmp_path / 'x.sqlite'}"],
        "ChainUnreachableError",
        contains=f"--chain {url}: no JSON-RPC answer",
    )


def test_a_signing_key_that_is_not_a_key_is_named_without_echoing_it(no_work: None) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = runner.invoke(app, ["deploy", "--chain", url], env={"V2G_PRIVATE_KEYS": "0xnot-a-key"})
    line = one_line(result)
    assert result.exit_code == 2
    assert line.startswith(f"InvalidSigningKeyError: V2G_PRIVATE_KEYS (for --chain {url}): ")
    assert "not-a-key" not in line


# --- the API server ---------------------------------------------------------------------------------


def test_a_port_in_use_is_named_before_the_server_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("uvicorn.run", lambda *_a, **_k: pytest.fail("the server started"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_refused(
            ["serve", "--port", str(port)],
            "AddressUnavailableError",
            contains=f"--host 127.0.0.1 --port {port}: Address already in use",
        )
        # `operate` names the option that clashes: the API's port here, not the CSMS's
        assert_refused(
            ["operate", "--port", str(_free()), "--api-port", str(port)],
            "AddressUnavailableError",
            contains=f"--host 127.0.0.1 --api-port {port}: Address already in use",
        )


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- keys ---------------------------------------------------------------------------------------------


def test_key_requests_that_cannot_be_met_are_named(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'keys.sqlite'}"
    assert_refused(
        ["keys", "create", "--role", "owner", "--owner", "nobody-here", "--db", db],
        "UnknownOwnerError",
        contains="--owner nobody-here: no such owner",
    )
    assert_refused(
        ["keys", "create", "--role", "boss", "--db", db], "InvalidRoleError", contains="--role boss"
    )
    assert_refused(
        ["keys", "create", "--role", "auditor", "--owner", "owner-00001", "--db", db], "InvalidKeyError"
    )
    assert_refused(["keys", "create", "--role", "owner", "--db", db], "InvalidKeyError")


# --- usage, forwarded commands, unexpected errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["schedule", "--foo"], "NoSuchOption"),
        (["audit", "statement"], "MissingParameter"),
        (["no-such-command"], "UsageError"),
        ([], "UsageError"),
    ],
)
def test_usage_errors_are_one_line_too(args: list[str], error: str) -> None:
    line = assert_refused(args, error)
    assert "--help" in line


@pytest.mark.parametrize(
    "args",
    [["case-study", "--days", "0"], ["case-study", "--no-such-option"], ["case-study", "--evs", "x"]],
)
def test_the_case_study_refuses_bad_arguments_in_one_line(args: list[str]) -> None:
    result = runner.invoke(app, args)
    line = one_line(result)
    assert result.exit_code == 2, result.output
    assert line.split(":")[0].endswith("Error"), line


def test_an_unexpected_error_is_one_internal_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr("scheduler.fleet.fleet_problem", broken)
    result = runner.invoke(app, ["schedule", "--evs", "2"])
    line = one_line(result)
    assert result.exit_code == 1
    assert line.startswith("InternalError: ZeroDivisionError: division by zero")
    assert "--debug" in line


def test_debug_raises_the_error_itself() -> None:
    result = runner.invoke(app, ["--debug", "schedule", "--date", "2023-13-45"])
    assert result.exit_code == 1
    assert isinstance(result.exception, InvalidDateError)


# --- a real process: nothing but the one line reaches the terminal -------------------------------------


def run_v2g(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    return subprocess.run(
        [str(V2G), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd, env=env
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["schedule", "--prices", "/nonexistent.csv"],
            "InputFileNotFoundError: --prices /nonexistent.csv: no such file",
        ),
        (
            ["audit", "statement", "--owner", "x", "--db", "sqlite:////nonexistent/dir/x.sqlite"],
            "DatabaseNotFoundError: --db sqlite:////nonexistent/dir/x.sqlite: "
            "directory /nonexistent/dir does not exist",
        ),
    ],
)
def test_the_installed_command_prints_one_line_on_stderr(args: list[str], line: str, tmp_path: Path) -> None:
    done = run_v2g(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [line]


def test_the_installed_command_shows_the_traceback_with_debug(tmp_path: Path) -> None:
    done = run_v2g("--debug", "schedule", "--date", "2023-13-45", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "InvalidDateError" in done.stderr


def test_owner_import_refuses_what_the_api_refuses_and_reads_a_bom(tmp_path: Path) -> None:
    """One address rule for every door: the settlement contract, a role account, a wrong EIP-55 checksum
    and the zero address are refused by name, the file changes nothing; a spreadsheet's BOM is read."""
    from sqlalchemy import select

    from backend.db.models import Deployment, Owner
    from backend.db.session import session_factory

    db = f"sqlite:///{tmp_path / 'v2g.sqlite'}"
    sessions = session_factory(db)
    contract = "0x" + "5e" * 20
    with sessions.begin() as session:
        session.add(
            Deployment(
                chain_id=1,
                token_address="0x" + "70" * 20,
                settlement_address=contract,
                block_number=1,
                artifact_hashes={},
                record={"settler": "0x" + "51" * 20, "meter": "0x" + "3e" * 20},
            )
        )
    good = "0x52908400098527886E0F7030069857D2E4169EE7"  # EIP-55's own example
    wrong_case = good[:-1] + "e"  # one letter's case changed: the checksum fails
    settler_dev = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's second dev account
    for address, error in [
        (contract.upper().replace("0X", "0x"), "SystemAddressError"),
        ("0x" + "51" * 20, "SystemAddressError"),
        (settler_dev, "SystemAddressError"),
        (wrong_case, "InvalidAddressError: mixed-case address with a wrong EIP-55 checksum"),
        ("0x" + "0" * 40, "InvalidAddressError: the zero address"),
        ("0x1234", "InvalidAddressError"),
    ]:
        registry = tmp_path / "owners.csv"
        registry.write_text(f"owner_id,address\nfine-1,{good.lower()}\nbad-1,{address}\n")
        line = assert_refused(["owners", "import", str(registry), "--db", db], "InvalidOwnerFileError")
        assert f"line 3: {error}" in line
    with sessions() as session:
        assert session.scalars(select(Owner)).all() == []
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfowner_id,address\r\nfine-1," + good.lower().encode() + b"\r\n")
    result = runner.invoke(app, ["owners", "import", str(bom), "--db", db])
    assert result.exit_code == 0 and "1 owner(s) registered" in result.output, result.output
    with sessions() as session:
        assert [(o.id, o.address) for o in session.scalars(select(Owner))] == [("fine-1", good)]


def test_portfolio_generate_creates_missing_folders_and_names_a_file_in_the_way(tmp_path: Path) -> None:
    out = tmp_path / "out" / "pf"
    result = runner.invoke(app, ["portfolio", "generate", str(out), "--evs", "50"])
    assert result.exit_code == 0, result.output
    assert (out / "day.csv").is_file()
    (tmp_path / "file").write_text("")
    assert_refused(
        ["portfolio", "generate", str(tmp_path / "file" / "pf"), "--evs", "50"],
        "InvalidPathError",
        contains=f"{tmp_path / 'file'} is not a directory",
    )


def test_a_misspelt_environment_variable_is_named_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2G_IMPORT_LIMT_KW", "3")
    assert_refused(
        ["chain", "status"],
        "InvalidSettingError",
        contains="V2G_IMPORT_LIMT_KW: not a setting (did you mean V2G_IMPORT_LIMIT_KW?)",
    )
    monkeypatch.delenv("V2G_IMPORT_LIMT_KW")
    monkeypatch.setenv("V2G_WHATEVER", "1")
    assert_refused(["chain", "status"], "InvalidSettingError", contains="V2G_WHATEVER: not a setting (see")
