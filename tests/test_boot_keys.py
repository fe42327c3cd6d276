"""boot_command parsing: characters to QKeyCodes (US layout), specials, waits, errors."""

from __future__ import annotations

import shutil

import pytest

from baker.boot.keys import (
    DEFAULT_WAITFOR_TIMEOUT,
    SPECIAL_KEYS,
    KeyDown,
    KeyUp,
    Press,
    Wait,
    WaitFor,
    char_keys,
    describe,
    parse_boot_command,
)
from baker.errors import BakerError
from tests.helpers.boot import qemu


@pytest.fixture(scope="module")
def qkeycodes(tmp_path_factory) -> set[str]:
    """The QKeyCode enum as this host's QEMU defines it (qapi/ui.json), read via query-qmp-schema."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed")
    with qemu(tmp_path_factory.mktemp("qmp"), [], machine="none", memory=16) as vm:
        schema = vm.execute("query-qmp-schema")
    # schema type names are opaque numbers; QKeyCode is the enum that has these members
    enums = [set(t["values"]) for t in schema if t.get("meta-type") == "enum"]
    values = {v for e in enums if {"ret", "shift", "kp_0"} <= e for v in e}
    assert values, "QKeyCode not found in the QMP schema"
    return values


def keys(text: str) -> list[tuple[str, ...]]:
    return [a.keys for a in parse_boot_command(text) if isinstance(a, Press)]


def test_plain_and_capital_letters():
    assert keys("aZ9") == [("a",), ("shift", "z"), ("9",)]


@pytest.mark.parametrize(
    ("ch", "expected"),
    [
        ("<", ("shift", "comma")),  # not qcode "less": that is the ISO 102nd key (Packer #5769)
        (">", ("shift", "dot")),
        ("|", ("shift", "backslash")),
        ("~", ("shift", "grave_accent")),
        (":", ("shift", "semicolon")),
        ('"', ("shift", "apostrophe")),
        ("?", ("shift", "slash")),
        ("{", ("shift", "bracket_left")),
        ("}", ("shift", "bracket_right")),
        ("!", ("shift", "1")),
        ("@", ("shift", "2")),
        ("#", ("shift", "3")),
        ("$", ("shift", "4")),
        ("%", ("shift", "5")),
        ("^", ("shift", "6")),
        ("&", ("shift", "7")),
        ("*", ("shift", "8")),
        ("(", ("shift", "9")),
        (")", ("shift", "0")),
        ("_", ("shift", "minus")),
        ("+", ("shift", "equal")),
        ("-", ("minus",)),
        ("=", ("equal",)),
        ("/", ("slash",)),
        ("\\", ("backslash",)),
        ("'", ("apostrophe",)),
        ("`", ("grave_accent",)),
        (" ", ("spc",)),
        (".", ("dot",)),
        (",", ("comma",)),
        (";", ("semicolon",)),
        ("[", ("bracket_left",)),
        ("]", ("bracket_right",)),
        ("\n", ("ret",)),
        ("\t", ("tab",)),
    ],
)
def test_us_layout_characters(ch, expected):
    assert char_keys(ch) == expected


def test_every_printable_ascii_and_special_maps_to_a_real_qcode(qkeycodes):
    for code in range(32, 127):
        assert set(char_keys(chr(code))) <= qkeycodes, chr(code)
    assert set(SPECIAL_KEYS.values()) <= qkeycodes


def test_specials_case_insensitive_and_packer_names():
    assert keys("<enter><return><ENTER><esc><tab><bs><del><spacebar>") == [
        ("ret",), ("ret",), ("ret",), ("esc",), ("tab",), ("backspace",), ("delete",), ("spc",)]
    assert keys("<insert><home><end><pageUp><pageDown><up><down><left><right><menu>") == [
        ("insert",), ("home",), ("end",), ("pgup",), ("pgdn",), ("up",), ("down",), ("left",),
        ("right",), ("compose",)]
    assert keys("<f1><F5><f12>") == [("f1",), ("f5",), ("f12",)]
    assert keys("<leftAlt><rightAlt><leftCtrl><rightCtrl><leftShift><rightShift><leftSuper><rightSuper>") == [
        ("alt",), ("alt_r",), ("ctrl",), ("ctrl_r",), ("shift",), ("shift_r",), ("meta_l",), ("meta_r",)]


def test_hold_and_release():
    assert parse_boot_command("<leftCtrlOn>c<leftCtrlOff><leftAltOn><f2><leftAltOff>") == [
        KeyDown("ctrl"), Press(("c",), "c"), KeyUp("ctrl"),
        KeyDown("alt"), Press(("f2",), "<f2>"), KeyUp("alt"),
    ]
    assert parse_boot_command("<aOn><aOff>") == [KeyDown("a"), KeyUp("a")]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("<wait>", 1.0), ("<wait5>", 5.0), ("<wait10>", 10.0), ("<wait1m20s>", 80.0), ("<wait500ms>", 0.5),
     ("<wait2s>", 2.0), ("<wait1h>", 3600.0), ("<WAIT3>", 3.0)],
)
def test_waits(text, seconds):
    assert parse_boot_command(text) == [Wait(seconds)]


def test_wait_for():
    assert parse_boot_command('<waitFor "boot:">') == [WaitFor("boot:", DEFAULT_WAITFOR_TIMEOUT)]
    assert DEFAULT_WAITFOR_TIMEOUT == 300.0
    assert parse_boot_command('<waitFor "login: " 5m>x') == [WaitFor("login: ", 300.0), Press(("x",), "x")]
    assert parse_boot_command('<waitFor "a > b <c>" 90s>') == [WaitFor("a > b <c>", 90.0)]
    assert parse_boot_command(r'<waitFor "say \"hi\"" 1m30s>') == [WaitFor('say "hi"', 90.0)]


def test_list_is_joined_like_packer():
    assert parse_boot_command(["ab", "<enter>"]) == parse_boot_command("ab<enter>")


def test_literal_angle_brackets_that_are_not_specials():
    text = "echo HELLO-<>|~Xyz a < b <a b>"
    typed = "".join(a.text for a in parse_boot_command(text) if isinstance(a, Press))
    assert typed == text
    assert [a.text for a in parse_boot_command("<lt>enter<gt>")] == ["<", "e", "n", "t", "e", "r", ">"]


def test_crlf_is_one_enter():
    assert keys("a\r\nb") == [("a",), ("ret",), ("b",)]


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [("<entr>", "<enter>"), ("<pgup>", "<pageUp>"), ("<leftCtrOn>", "<leftCtrlOn>"),
     ("<F13>", "<f"), ("<spcebar>", "<spacebar>"), ("<waitt5>", None)],
)
def test_unknown_special_says_which_and_suggests(text, suggestion):
    with pytest.raises(BakerError) as e:
        parse_boot_command("abc" + text)
    msg = str(e.value)
    assert f"unknown special key {text}" in msg or "bad wait" in msg
    if suggestion:
        assert f"did you mean {suggestion}" in msg


@pytest.mark.parametrize("text", ['<waitFor boot>', '<waitFor "">', '<waitFor "x" soon>', "<wait5x>"])
def test_malformed_waits(text):
    with pytest.raises(BakerError):
        parse_boot_command(text)


def test_untypeable_character():
    with pytest.raises(BakerError, match="cannot type 'é'"):
        parse_boot_command("café")


def test_describe_is_readable():
    text = describe(parse_boot_command('ab<enter><wait2><waitFor "x" 1m><leftCtrlOn>c<leftCtrlOff>'))
    assert text == "ab<enter><wait 2s><waitFor 'x' 60s><ctrl down>c<ctrl up>"
