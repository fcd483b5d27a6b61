"""Target profiles: built-ins, user files, `extends`, inline suite profiles and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgebench.bench import cli_targets
from edgebench.bench.config import load_suite
from edgebench.bench.contracts.errors import ConfigError
from edgebench.targets.profiles import load_profiles

BUILTINS = {"local", "jetson-orin-nano", "jetson-agx-orin", "raspberry-pi-4", "raspberry-pi-5", "desktop-gpu"}


def test_builtins_validate_and_boards_are_ssh():
    profiles = load_profiles()
    assert BUILTINS <= set(profiles.names())
    for name in BUILTINS:
        p = profiles.get(name)
        assert p.is_local == (name == "local")
        if not p.is_local:
            assert p.ssh.host == name  # an ~/.ssh/config alias of the profile's name works out of the box
            assert "torch" not in p.extras
    assert "tegrastats" in profiles.get("jetson-orin-nano").samplers
    assert "vcgencmd" in profiles.get("raspberry-pi-5").samplers
    assert "nvml" in profiles.get("desktop-gpu").samplers


def test_user_file_extends_a_builtin_and_overrides_only_what_differs(tmp_path):
    f = tmp_path / "targets.yaml"
    f.write_text(yaml.safe_dump({"targets": [{"name": "bench-pi", "extends": "raspberry-pi-5",
                                              "ssh": {"host": "10.0.0.7", "user": "pi", "jump_host": "gw.example"}}]}))
    p = load_profiles(f).get("bench-pi")
    assert (p.ssh.host, p.ssh.user, p.ssh.jump_host) == ("10.0.0.7", "pi", "gw.example")
    assert p.samplers == load_profiles().get("raspberry-pi-5").samplers
    assert p.monitor.thermal_limit_c == 55


@pytest.mark.parametrize("entry,needle", [
    ({"name": "x", "transport": "ssh"}, "needs an `ssh: {host: ...}` block"),
    ({"name": "x", "extends": "nope"}, "extends unknown target 'nope'"),
    ({"name": "x", "transport": "ssh", "ssh": {"host": "h", "prot": 22}}, "prot"),
    ({"name": "x", "transport": "telnet"}, "transport"),
])
def test_bad_profiles_are_one_line_errors_naming_the_file(tmp_path, entry, needle):
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(entry))
    with pytest.raises(ConfigError) as e:
        load_profiles(f).get("x")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_extends_loop_is_refused(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump({"targets": [{"name": "a", "extends": "b"}, {"name": "b", "extends": "a"}]}))
    with pytest.raises(ConfigError, match="loops"):
        load_profiles(f).get("a")


def test_missing_targets_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="targets file not found"):
        load_profiles(tmp_path / "missing.yaml")


def test_suite_inline_profile_and_cli_override(write_suite):
    suite = write_suite("s.yaml", {"models": ["small_cnn"], "backends": ["onnxruntime"], "targets": ["lab-board"],
                                   "target_profiles": [{"name": "lab-board", "transport": "ssh", "ssh": {"host": "lab"}, "threads": 4}]})
    loaded = load_suite(suite)
    assert loaded.profiles["lab-board"].ssh.host == "lab"
    assert {c.options["threads"] for c in loaded.cells()} == {4}  # the board's default, not the host's CPU count
    assert load_suite(suite, targets=["local"]).suite.targets == ["local"]
    with pytest.raises(ConfigError, match="unknown target 'nowhere'"):
        load_suite(suite, targets=["nowhere"])


def test_remote_cells_without_threads_leave_it_to_the_device(write_suite):
    suite = write_suite("s.yaml", {"models": ["small_cnn"], "backends": ["onnxruntime"], "targets": ["local", "raspberry-pi-4"]})
    threads = {c.target: c.options["threads"] for c in load_suite(suite).cells()}
    assert threads["raspberry-pi-4"] is None and threads["local"] >= 1


def test_every_built_in_profile_installs_extras_that_exist():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    profiles = load_profiles(targets_file=None)
    for name in BUILTINS:
        missing = set(profiles.get(name).extras) - extras
        assert not missing, f"{name}: extras {missing} are not in pyproject.toml"
    assert "nvml" in profiles.get("desktop-gpu").extras and "nvml" in profiles.get("desktop-gpu").samplers


def test_an_unknown_sampler_is_a_one_line_error_naming_the_file_the_key_and_the_known_ones(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump({"name": "x", "samplers": ["thermal", "tegrastat"]}))
    with pytest.raises(ConfigError) as e:
        load_profiles(f).get("x")
    message = str(e.value)
    assert message.startswith(f"{f}: target 'x': samplers: unknown sampler 'tegrastat'; did you mean 'tegrastats'?")
    assert "cpufreq" in message and "nvml" in message and "auto" in message and "\n" not in message


def test_the_transport_follows_the_ssh_block_unless_the_profile_names_one(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump({"targets": [{"name": "board", "ssh": {"host": "b"}},
                                             {"name": "here", "transport": "local", "ssh": {"host": "b"}}, {"name": "plain"}]}))
    profiles = load_profiles(f)
    assert profiles.get("board").transport == "ssh" and not profiles.get("board").is_local
    assert profiles.get("here").is_local and profiles.get("plain").is_local


def test_description_is_per_board_not_inherited_through_extends(tmp_path, monkeypatch):
    f = tmp_path / "targets.yaml"
    f.write_text(yaml.safe_dump({"targets": [{"name": "bench-pi", "extends": "raspberry-pi-5", "ssh": {"host": "10.0.0.7"}},
                                             {"name": "lab-pi", "extends": "raspberry-pi-5", "description": "the lab's Pi"}]}))
    profiles = load_profiles(f)
    assert profiles.get("raspberry-pi-5").description and profiles.get("bench-pi").description == ""
    assert profiles.get("lab-pi").description == "the lab's Pi" and profiles.parent("bench-pi") == "raspberry-pi-5"
    lines: list[str] = []
    monkeypatch.setattr(cli_targets, "_echo", lines.append)
    cli_targets.print_targets(f)
    assert "bench-pi: ssh 10.0.0.7; (no description; extends raspberry-pi-5)" in lines


def test_targets_file_replaces_the_users_file(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".config" / "edgebench").mkdir(parents=True)
    (home / ".config" / "edgebench" / "targets.yaml").write_text(yaml.safe_dump({"name": "from-user-file", "ssh": {"host": "a"}}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("EDGEBENCH_TARGETS", raising=False)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"name": "from-targets-option", "ssh": {"host": "b"}}))
    assert "from-user-file" in load_profiles().names()
    names = load_profiles(other).names()
    assert "from-targets-option" in names and "from-user-file" not in names  # as docs/targets.md says
