"""The one rule by which names become store keys (dynamics.store.names): reversible on every string,
portable keys, stores written before keep their keys, and what cannot be settled is refused."""

from __future__ import annotations

import random
import string

import pytest

from dynamics.store.names import MAX_KEY, GroupKeys, Stored, decode, encode, legacy_key, original

#: Characters that file systems, zarr or URLs treat specially, and a few beyond ASCII
AWKWARD = ["/", "\\", ":", "*", "?", "\"", "<", ">", "|", "%", "~", " ", "\t", "\n", "\x00", "-", "+", "#",
           "λ", "é", "e\u0301", "😀", "\udcff", "Ω"]


def _brute_decode(key: str) -> str:
    """An independent decoder: "-hh" runs are UTF-8 bytes, "__" a dot, any other character itself."""
    out, i = bytearray(), 0
    while i < len(key):
        if key[i] == "-":
            out.append(int(key[i + 1:i + 3], 16))
            i += 3
        elif key.startswith("__", i):
            out += b"."
            i += 2
        else:
            out += key[i].encode()
            i += 1
    return out.decode("utf-8", "surrogatepass")


@pytest.mark.parametrize("name, key", [
    ("blocks.0.F.linear.weight", "blocks__0__F__linear__weight"),   # as every store written before
    ("in_proj_weight", "in_proj_weight"),
    ("_orig_mod.layer.weight", "_orig_mod__layer__weight"),
    ("d.enc/0.weight", "d__enc-2f0__weight"),                      # the ModuleDict key
    ("a__b", "a_-5fb"),                                            # not the key of "a.b"
    ("a.b", "a__b"),
    ("a_.b", "a-5f__b"), ("a._b", "a__-5fb"), ("a..b", "a-2e-2eb"),
    (".a", "-2ea"), ("a.", "a-2e"), ("_", "_"), ("__w", "_-5fw"),
    ("λ", "-ce-bb"), ("enc-0", "enc-2d0"), ("a b", "a-20b"),
])
def test_keys_of_constructed_names(name, key):
    assert encode(name) == key
    assert decode(key) == name
    assert _brute_decode(key) == name


def test_every_string_round_trips_to_a_portable_key_and_no_two_names_share_one():
    rng = random.Random(20240521)
    alphabet = [".", "_", "a", "Z", "0", *AWKWARD]
    seen: dict[str, str] = {}
    for _ in range(20000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        key = encode(name)
        assert decode(key) == name and _brute_decode(key) == name, (name, key)
        assert set(key) <= set(string.ascii_letters + string.digits + "_-"), key   # legal on every file system
        assert not key.startswith("__") and "___" not in key                   # zarr reserves "__"
        assert seen.setdefault(key, name) == name, (name, seen[key])           # injective


def test_names_that_are_not_strings_or_empty_are_refused():
    with pytest.raises(ValueError, match="empty name"):
        encode("")
    with pytest.raises(TypeError, match="must be a string, got 3"):
        encode(3)


@pytest.mark.parametrize("key", ["a___b", "a-2", "a-zz", "a-2F", "a.b", "a/b", "-ff", "-5fa"])
def test_strings_that_no_name_encodes_to_are_not_keys(key):
    with pytest.raises(ValueError, match="is not a store key"):
        decode(key)


def test_readers_recover_names_from_the_attribute_and_from_keys_written_before():
    assert original("d__enc-2f0__weight", {"name": "d.enc/0.weight"}) == "d.enc/0.weight"
    assert original("d__enc-2f0__weight") == "d.enc/0.weight"          # decoded
    assert original("d__enc-0__weight") == "d.enc-0.weight"            # an old key: "__" → "."
    assert legacy_key("d.enc-0.weight") == "d__enc-0__weight"


def test_group_keys_refuse_taken_reserved_case_folded_and_long_keys():
    keys = GroupKeys("params", reserved=["checkpoint", "step"])
    assert keys.add("w", "parameter", dims=lambda k: [f"{k}_dim0"]) == "w"
    assert keys.add("w", "parameter") == "w"                          # the same name: the same key
    with pytest.raises(ValueError, match=r"parameter 'step' would be stored as params/step, which is taken by "
                                         r"the group itself"):
        keys.add("step", "parameter")
    with pytest.raises(ValueError, match=r"'w_dim0' would be stored as params/w_dim0, which is taken by 'w'"):
        keys.add("w_dim0", "parameter")                               # a dimension of w
    with pytest.raises(ValueError, match=r"'W' .* differs only in letter case from params/w \(taken by 'w'\)"):
        keys.add("W", "parameter")
    with pytest.raises(ValueError, match=r"'Step' .* differs only in letter case from params/step"):
        keys.add("Step", "parameter")
    with pytest.raises(ValueError, match=f"at most {MAX_KEY} are allowed"):
        keys.add("x" * (MAX_KEY + 1), "parameter")
    assert keys.add("x" * MAX_KEY, "parameter") == "x" * MAX_KEY


def test_group_keys_keep_the_keys_a_store_holds_including_keys_written_before():
    stored = {"d__enc-0__weight": Stored(None, ("d__enc-0__weight_dim0",), (3,)),      # written before the rule
              "d__enc-2f1__weight": Stored("d.enc/1.weight", ("d__enc-2f1__weight_dim0",), (3,))}
    keys = GroupKeys("params", existing=stored)
    assert keys.add("d.enc-0.weight", "parameter") == "d__enc-0__weight"          # appended to, not doubled
    assert keys.add("d.enc/1.weight", "parameter") == "d__enc-2f1__weight"
    assert keys.add("d.enc-2.weight", "parameter") == "d__enc-2d2__weight"        # a new name: the rule
    with pytest.raises(ValueError, match="taken by 'd.enc/1.weight'"):
        keys.add("d.enc/1.weight_dim0", "parameter")       # its key is a stored dimension
