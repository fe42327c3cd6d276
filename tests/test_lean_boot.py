"""The build boot's cloud-init module lists (baker.lean_boot) and how they reach the seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from baker.keys import BuildKeys, generate_build_keys
from baker.lean_boot import lean_module_lists
from baker.seed import render_user_data
from baker.template.model import CloudInitConfig

ALWAYS = ["write-files-deferred", "scripts-vendor", "scripts-per-once", "scripts-per-boot",
          "scripts-per-instance", "scripts-user", "final-message"]


@pytest.fixture
def keys(tmp_path: Path) -> BuildKeys:
    return generate_build_keys(tmp_path / "keys")


def test_nothing_asked_for_runs_no_config_module_and_only_the_images_own_scripts_in_final() -> None:
    lists, why_not = lean_module_lists({}, password=False)
    assert why_not == ""
    assert lists == {"cloud_config_modules": [], "cloud_final_modules": ALWAYS}


def test_a_password_keeps_set_passwords_so_ssh_pwauth_takes_effect() -> None:
    assert lean_module_lists({}, password=True)[0]["cloud_config_modules"] == ["set-passwords"]


def test_keys_keep_the_modules_that_act_on_them() -> None:
    lists, _ = lean_module_lists({"runcmd": ["x"], "packages": ["jq"], "timezone": "UTC", "apt": {},
                                  "power_state": {"mode": "poweroff"}, "write_files": []}, password=False)
    assert lists["cloud_config_modules"] == ["apt-configure", "timezone", "runcmd"]  # cloud.cfg's order
    assert lists["cloud_final_modules"] == ["package-update-upgrade-install", "power-state-change", *ALWAYS]


def test_an_unknown_key_turns_trimming_off_and_says_which() -> None:
    lists, why_not = lean_module_lists({"runcmd": [], "vendor_thing": 1, "another": 2}, password=False)
    assert lists == {}
    assert "another, vendor_thing" in why_not


def test_module_lists_of_the_users_own_win() -> None:
    lists, why_not = lean_module_lists({"cloud_final_modules": ["phone-home"]}, password=False)
    assert lists == {} and "module lists" in why_not


def test_the_seed_carries_the_lists_and_the_users_keys(keys: BuildKeys) -> None:
    text = render_user_data(username="baker", keys=keys,
                            cloud_init=CloudInitConfig(user_data={"runcmd": ["touch /x"]}))
    ud = yaml.safe_load(text)
    assert ud["cloud_config_modules"] == ["runcmd"]
    assert ud["cloud_final_modules"] == ALWAYS
    assert ud["runcmd"] == ["touch /x"] and ud["users"][0]["name"] == "baker"


def test_lean_boot_off_leaves_the_images_module_lists(keys: BuildKeys) -> None:
    ud = yaml.safe_load(render_user_data(username="baker", keys=keys,
                                         cloud_init=CloudInitConfig(lean_boot=False)))
    assert not {"cloud_config_modules", "cloud_final_modules"} & set(ud)
