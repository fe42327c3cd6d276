"""Packer's boot_command syntax parsed into key actions named by QEMU QKeyCode (US layout).

QMP input events carry *key positions*, not characters, so shifted characters must be sent as
shift + base key; `<` is shift+comma (qcode `less` is the extra ISO key, Packer issue #5769).
Beyond Packer: `<waitFor "text">` / `<waitFor "text" 2m>` waits for text on the serial console,
and `<lt>` / `<gt>` type a literal `<` / `>` where a `<word>` would otherwise be a special key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from baker.errors import BakerError
from baker.units import parse_duration

DEFAULT_WAITFOR_TIMEOUT = 300.0


@dataclass(frozen=True)
class Press:
    """Press `keys` in order, then release them in reverse (e.g. ("shift", "a") types "A")."""

    keys: tuple[str, ...]
    text: str = ""  # what the user wrote, for logs


@dataclass(frozen=True)
class KeyDown:
    """Hold a key until the matching KeyUp (`<leftCtrlOn>`)."""

    key: str


@dataclass(frozen=True)
class KeyUp:
    key: str


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class WaitFor:
    """Wait until `text` appears on the serial console (after the previous WaitFor's match)."""

    text: str
    timeout: float = DEFAULT_WAITFOR_TIMEOUT


Action = Press | KeyDown | KeyUp | Wait | WaitFor

# Unshifted US-layout characters → qcode.
_PLAIN: dict[str, str] = {c: c for c in "abcdefghijklmnopqrstuvwxyz0123456789"}
_PLAIN.update({
    " ": "spc", "-": "minus", "=": "equal", "[": "bracket_left", "]": "bracket_right",
    ";": "semicolon", "'": "apostrophe", "`": "grave_accent", "\\": "backslash", ",": "comma",
    ".": "dot", "/": "slash", "\n": "ret", "\t": "tab",
})
# Shifted US-layout characters → the base key pressed with shift.
_SHIFTED: dict[str, str] = {c.upper(): c for c in "abcdefghijklmnopqrstuvwxyz"}
_SHIFTED.update({
    "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8", "(": "9", ")": "0",
    "_": "minus", "+": "equal", "{": "bracket_left", "}": "bracket_right", ":": "semicolon",
    '"': "apostrophe", "~": "grave_accent", "|": "backslash", "<": "comma", ">": "dot", "?": "slash",
})

# Packer's special key names (lower-cased; matching is case-insensitive like Packer's) → qcode.
SPECIAL_KEYS: dict[str, str] = {
    "enter": "ret", "return": "ret", "esc": "esc", "tab": "tab", "bs": "backspace", "del": "delete",
    "spacebar": "spc", "insert": "insert", "home": "home", "end": "end", "pageup": "pgup",
    "pagedown": "pgdn", "up": "up", "down": "down", "left": "left", "right": "right",
    # the context-menu key (scancode e0 5d, what Packer's VNC keysym Menu produces) is qcode "compose"
    "menu": "compose",
    "leftalt": "alt", "rightalt": "alt_r", "leftctrl": "ctrl", "rightctrl": "ctrl_r",
    "leftshift": "shift", "rightshift": "shift_r", "leftsuper": "meta_l", "rightsuper": "meta_r",
    "leftcommand": "meta_l", "rightcommand": "meta_r", "leftoption": "alt", "rightoption": "alt_r",
    **{f"f{n}": f"f{n}" for n in range(1, 13)},
}
# Specials that type a character rather than name a key.
_CHAR_SPECIALS = {"lt": "<", "gt": ">"}

_WAITFOR_RE = re.compile(r'<waitFor\s+"((?:[^"\\]|\\.)*)"(?:\s+([0-9][0-9a-z.]*))?\s*>', re.IGNORECASE)
_WORD_RE = re.compile(r"<([A-Za-z][A-Za-z0-9.]*)>")
_WAIT_RE = re.compile(r"wait([0-9][0-9a-z.]*)?", re.IGNORECASE)
_ONOFF_RE = re.compile(r"(.+?)(on|off)", re.IGNORECASE)


def char_keys(ch: str) -> tuple[str, ...]:
    """The qcodes that type `ch` on a US keyboard, modifiers first."""
    if ch in _PLAIN:
        return (_PLAIN[ch],)
    if ch in _SHIFTED:
        return ("shift", _SHIFTED[ch])
    raise BakerError(
        f"boot_command: cannot type {ch!r}: only US-keyboard ASCII characters can be typed",
        hint="replace it, or send the key combination yourself with <leftShiftOn>…<leftShiftOff>",
    )


def _names() -> list[str]:
    """Every special spelled as users write it, for did-you-mean."""
    pretty = {"pageup": "pageUp", "pagedown": "pageDown"}
    out = []
    for name in [*SPECIAL_KEYS, *_CHAR_SPECIALS]:
        shown = pretty.get(name, name)
        for side in ("left", "right"):
            if shown.startswith(side):
                shown = side + shown[len(side):].capitalize()
        out.append(shown)
    return [*out, "wait", "wait5", "wait10", "waitFor"]


def _unknown(word: str, context: str) -> BakerError:
    keys = [n for n in _names() if n.lower() in SPECIAL_KEYS]
    candidates = {n.lower(): n for n in [*_names(), *(k + s for k in keys for s in ("On", "Off"))]}
    guess = difflib.get_close_matches(word.lower(), list(candidates), n=1, cutoff=0.6)
    suggestion = f"did you mean <{candidates[guess[0]]}>? " if guess else ""
    return BakerError(
        f"boot_command: unknown special key <{word}> in …{context!r}",
        hint=f"{suggestion}to type it literally write <lt>{word}<gt>",
    )


def _key_for(name: str) -> str | None:
    """qcode for a special name or a single character (for <aOn>), else None."""
    if name.lower() in SPECIAL_KEYS:
        return SPECIAL_KEYS[name.lower()]
    if len(name) == 1:
        keys = char_keys(name)
        return keys[-1]
    return None


def _parse_word(word: str, context: str) -> Action:
    lower = word.lower()
    if lower in SPECIAL_KEYS:
        return Press((SPECIAL_KEYS[lower],), f"<{word}>")
    if lower in _CHAR_SPECIALS:
        ch = _CHAR_SPECIALS[lower]
        return Press(char_keys(ch), ch)
    if m := _WAIT_RE.fullmatch(word):
        spec = m.group(1)
        if spec is None:
            return Wait(1.0)
        try:
            return Wait(parse_duration(spec))
        except ValueError as e:
            raise BakerError(f"boot_command: bad wait <{word}>: {e}",
                             hint="write <wait5>, <wait10s>, <wait1m20s> or <wait500ms>") from None
    if m := _ONOFF_RE.fullmatch(word):
        key = _key_for(m.group(1))
        if key is not None:
            return KeyDown(key) if m.group(2).lower() == "on" else KeyUp(key)
    raise _unknown(word, context)


def parse_boot_command(command: str | Sequence[str]) -> list[Action]:
    """Parse a boot_command (a list is joined without separators, as Packer does) into actions.

    `<word>` must be a known special; any other `<` (e.g. `<>`, `a < b`) is typed literally.
    """
    text = command if isinstance(command, str) else "".join(command)
    actions: list[Action] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            if m := _WAITFOR_RE.match(text, i):
                needle = re.sub(r"\\(.)", r"\1", m.group(1))
                if not needle:
                    raise BakerError("boot_command: <waitFor> needs a non-empty text")
                timeout = DEFAULT_WAITFOR_TIMEOUT
                if m.group(2):
                    try:
                        timeout = parse_duration(m.group(2))
                    except ValueError as e:
                        raise BakerError(f"boot_command: bad timeout in {m.group(0)}: {e}") from None
                actions.append(WaitFor(needle, timeout))
                i = m.end()
                continue
            if text.startswith("<waitFor", i) or text.lower().startswith("<waitfor", i):
                end = text.find(">", i)
                raise BakerError(
                    f"boot_command: malformed {text[i:end + 1 if end >= 0 else None]!r}",
                    hint='write <waitFor "text"> or <waitFor "text" 5m>',
                )
            if m := _WORD_RE.match(text, i):
                actions.append(_parse_word(m.group(1), text[max(0, i - 20):m.end()]))
                i = m.end()
                continue
        if ch == "\r":  # Windows line endings in YAML block scalars: "\r\n" is one Enter
            i += 1
            continue
        actions.append(Press(char_keys(ch), ch))
        i += 1
    return actions


def describe(actions: Sequence[Action]) -> str:
    """A compact, human-readable rendering for logs (typed text runs joined)."""
    parts: list[str] = []
    for a in actions:
        match a:
            case Press(text=t) if t and not t.startswith("<"):
                parts.append(t.replace("\n", "⏎"))
            case Press(keys=k, text=t):
                parts.append(t or f"<{'+'.join(k)}>")
            case KeyDown(key=k):
                parts.append(f"<{k} down>")
            case KeyUp(key=k):
                parts.append(f"<{k} up>")
            case Wait(seconds=s):
                parts.append(f"<wait {s:g}s>")
            case WaitFor(text=t, timeout=s):
                parts.append(f"<waitFor {t!r} {s:g}s>")
    return "".join(parts)
