"""How a name a user gives becomes a key of a run store — the one rule.

Keys are zarr array names (folders on disk) and xarray variable and dimension names. Every name that
becomes one — a parameter (``enc.0.weight``), a recorded layer (``rep_<key>``), a metric or
checkpoint scalar, a probe input, a run label — goes through :func:`encode`:

- ASCII letters and digits are kept;
- "." becomes "__" (``blocks.0.F`` → ``blocks__0__F``, as in every store written before), where it
  separates two parts of a module path (not first, not last, not next to another ".");
- "_" is kept, except where it follows "_" or "." or precedes "." (the underscores of ``a__b``);
- every other character (and each excepted "." or "_") becomes "-" and two lower-case hexadecimal
  digits per byte of its UTF-8 encoding (``enc/0`` → ``enc-2f0``, ``λ`` → ``-ce-bb``, ``a__b`` →
  ``a_-5fb``).

So a key holds only ``[A-Za-z0-9_-]``: a valid name on every file system (nothing illegal on FAT,
NTFS or in URLs, no "/"), for zarr (never empty, never starting with zarr's reserved "__") and for
xarray. Its underscores come alone (a kept "_") or in pairs (a "."), so :func:`decode` recovers the
name exactly: ``decode(encode(name)) == name`` for every non-empty string.

What :func:`encode` cannot settle is refused with a ValueError naming the name
(:meth:`GroupKeys.add`): an empty name, a key longer than :data:`MAX_KEY` characters, a key that
another name of the same group already uses, a key equal to a coordinate, dimension or reserved
variable of the group, and two keys that differ only in letter case (one folder on the
case-insensitive file systems of macOS and Windows).

The writer stores the user's name beside each variable as its attribute :data:`NAME_ATTR`, so
readers recover it without decoding (:func:`original`); stores written before have no such
attribute, and their keys are "." → "__" of the name (:func:`legacy_key`).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

#: The longest key (characters; keys are ASCII): folder names stay far below the 255 bytes that
#: file systems allow, with room for the temporary names written beside them.
MAX_KEY = 200
#: Attribute of a stored variable holding the name the user gave (absent in stores written before).
NAME_ATTR = "name"

_KEPT = frozenset(string.ascii_letters + string.digits)
_HEX = frozenset("0123456789abcdef")


def _escape(char: str) -> str:
    return "".join(f"-{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))


def encode(name: str) -> str:
    """The key of ``name`` (module docstring); TypeError for a non-string, ValueError for ""."""
    if not isinstance(name, str):
        raise TypeError(f"a stored name must be a string, got {name!r} ({type(name).__name__})")
    if not name:
        raise ValueError("'' is an empty name: it cannot name a stored variable")
    out = []
    last = len(name) - 1
    for i, char in enumerate(name):
        before = name[i - 1] if i > 0 else ""
        after = name[i + 1] if i < last else ""
        if char in _KEPT:
            out.append(char)
        elif char == "." and 0 < i < last and before != "." and after != ".":
            out.append("__")             # its neighbours are kept letters or escapes: no longer run of "_"
        elif char == "_" and before not in ("_", ".") and after != ".":
            out.append("_")
        else:
            out.append(_escape(char))
    return "".join(out)


def decode(key: str) -> str:
    """The name whose key is ``key`` (the inverse of :func:`encode`); ValueError for a string that
    :func:`encode` never returns."""
    out, i, n = bytearray(), 0, len(key)
    while i < n:
        char = key[i]
        if char in _KEPT:
            out += char.encode()
            i += 1
        elif char == "-":
            digits = key[i + 1:i + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ValueError(f"{key!r} is not a store key: '-' must be followed by two lower-case hex digits")
            out.append(int(digits, 16))
            i += 3
        elif char == "_":
            run = len(key) - len(key[i:].lstrip("_")) - i
            if run > 2:
                raise ValueError(f"{key!r} is not a store key: a run of {run} underscores")
            out += b"_" if run == 1 else b"."
            i += run
        else:
            raise ValueError(f"{key!r} is not a store key: character {char!r}")
    try:
        name = out.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as err:
        raise ValueError(f"{key!r} is not a store key: its escapes are not UTF-8 ({err})") from None
    if encode(name) != key:
        raise ValueError(f"{key!r} is not a store key (the key of {name!r} is {encode(name)!r})")
    return name


def legacy_key(name: str) -> str:
    """The key that stores written before this rule gave ``name``: "." → "__"."""
    return name.replace(".", "__")


def original(key: str, attrs: Mapping[str, object] | None = None) -> str:
    """The name a user gave the stored variable ``key`` with attributes ``attrs``: its
    :data:`NAME_ATTR` attribute, else (stores written before) the key with "__" → "." where it
    decodes, else the key itself."""
    if attrs and isinstance(attrs.get(NAME_ATTR), str):
        return attrs[NAME_ATTR]
    try:
        return decode(key)
    except ValueError:
        return legacy_key(key).replace("__", ".")


class Stored(NamedTuple):
    """A variable a store holds, as :class:`GroupKeys` needs it."""
    name: str | None                  # the user's name (attribute NAME_ATTR), None in stores written before
    dims: tuple[str, ...]             # dimension names after the row dimension
    shape: tuple[int, ...]            # shape per row


class GroupKeys:
    """The keys in use in one group of a store, and the rule for adding one.

    Args:
        group: the group's name, for messages ("metrics", "checkpoints", "params", ...).
        reserved: names no user name may take (the group's coordinates, dimensions and own variables).
        existing: key → :class:`Stored` of the variables the store already holds.
    """

    def __init__(self, group: str, reserved: Iterable[str] = (), existing: Mapping[str, Stored] | None = None) -> None:
        self.group = group
        self.existing = {key: stored.name for key, stored in (existing or {}).items()}
        self.keys: dict[str, str] = {}           # name → key given in this session
        self._taken: dict[str, str] = {}         # every key and dimension in use → what uses it
        self._folded: dict[str, str] = {}        # lower-case → the name in use
        for name in reserved:
            self._take(name, "the group itself (a reserved name)")
        for key, stored in (existing or {}).items():
            for taken in (key, *stored.dims):
                self._take(taken, repr(stored.name) if stored.name is not None else f"the stored variable {key}")

    def _take(self, taken: str, user: str) -> None:
        self._taken[taken] = user
        self._folded.setdefault(taken.lower(), taken)

    def add(self, name: str, what: str, prefix: str = "", dims: Callable[[str], Iterable[str]] | None = None) -> str:
        """The key of ``name`` (``prefix`` + :func:`encode`), now in use. ``dims(key)``: the dimension
        names the variable adds to the group (free as well). A name the store already holds keeps its
        stored key (also one written before this rule: :func:`legacy_key`).

        ValueError naming ``what``, ``name`` and the other user when the key or a dimension is taken
        (or reserved), when the key is longer than :data:`MAX_KEY`, or when it differs only in letter
        case from a name in use."""
        if name in self.keys:
            return self.keys[name]
        key = prefix + encode(name)
        legacy = prefix + legacy_key(name)
        stored = key if key in self.existing else legacy if legacy in self.existing else None
        if stored is not None and self.existing[stored] in (None, name):
            self.keys[name] = stored            # the variable the store holds for this name
            return stored
        if len(key) > MAX_KEY:
            raise ValueError(f"{what} {name!r} would be stored under a key of {len(key)} characters "
                             f"({key[:40]}...); at most {MAX_KEY} are allowed: shorten the name")
        taken = [key, *(dims(key) if dims is not None else ())]
        for candidate in taken:
            if candidate in self._taken:
                raise ValueError(f"{what} {name!r} would be stored as {self.group}/{candidate}, which is taken "
                                 f"by {self._taken[candidate]}; rename it")
            clash = self._folded.get(candidate.lower())
            if clash is not None:
                raise ValueError(f"{what} {name!r} would be stored as {self.group}/{candidate}, which differs "
                                 f"only in letter case from {self.group}/{clash} (taken by {self._taken[clash]}): "
                                 f"one folder on case-insensitive file systems (macOS, Windows); rename it")
        for candidate in taken:
            self._take(candidate, repr(name))
        self.keys[name] = key
        return key
