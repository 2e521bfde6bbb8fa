"""The configuration file: every setting settable there, the environment over it, a misspelt or
malformed file named in one line, and examples/v2g.toml listing every setting with its default."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backend.cli import app
from backend.config import ConfigFileError, Settings
from backend.portal.config import PortalSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "v2g.toml"


def test_the_example_lists_every_setting_with_its_default() -> None:
    text = EXAMPLE.read_text()
    values = tomllib.loads(text)
    for cls in (Settings, PortalSettings):
        for name, field in cls.model_fields.items():
            if field.default is None:  # TOML has no null: shown commented out, or named in a comment
                assert re.search(rf"^# {name}\b", text, re.MULTILINE), name
            else:
                default = list(field.default) if isinstance(field.default, tuple) else field.default
                assert values[name] == default, name  # a tuple is a TOML array


def test_the_file_sets_what_the_environment_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("V2G_FEE_BPS", "V2G_CLAIM_BATCH", "V2G_DATABASE_URL", "V2G_SECURE_COOKIES"):
        monkeypatch.delenv(name, raising=False)
    Path("v2g.toml").write_text(
        'database_url = "sqlite:///from-file.sqlite"\nfee_bps = 25\nclaim_batch = 7\nsecure_cookies = true\n'
    )
    monkeypatch.setenv("V2G_CLAIM_BATCH", "9")  # the environment wins over the file
    settings = Settings()
    assert (settings.database_url, settings.fee_bps, settings.claim_batch) == (
        "sqlite:///from-file.sqlite",
        25,
        9,
    )
    assert PortalSettings().secure_cookies is True
    other = tmp_path / "elsewhere.toml"
    other.write_text("fee_bps = 40\n")
    monkeypatch.setenv("V2G_CONFIG", str(other))  # a named file instead of ./v2g.toml
    assert (Settings().fee_bps, Settings().database_url) == (40, "sqlite:///v2g.sqlite")


@pytest.mark.parametrize(
    ("text", "named", "says"),
    [
        ("fee_bp = 25\n", None, "unknown setting(s) fee_bp"),
        ("fee_bps = \n", None, "v2g.toml"),
        ("fee_bps = 20000\n", "V2G_FEE_BPS (or fee_bps in v2g.toml)", "less than or equal to 10000"),
        (None, None, "V2G_CONFIG=missing.toml: no such file"),
    ],
)
def test_a_bad_file_is_one_named_line_and_no_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None, named: str | None, says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("V2G_FEE_BPS", raising=False)
    if text is None:
        monkeypatch.setenv("V2G_CONFIG", "missing.toml")
    else:
        Path("v2g.toml").write_text(text)
    if named is None:
        with pytest.raises(ConfigFileError, match=re.escape(says)):
            Settings()
    result = CliRunner().invoke(app, ["audit", "reconcile"])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith("InvalidSettingError: ") and says in line and len(line.splitlines()) == 1, line
    if named is not None:
        assert named in line
    assert not Path("v2g.sqlite").exists()  # nothing was opened, nothing written
