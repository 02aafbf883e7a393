"""The reference's C number and string rules (spec §3.1)."""

from __future__ import annotations

import pytest

from semtrust.errors import InputError
from semtrust.events.numbers import c_unescape, hexbytes, strtoll, u16, u32, u64


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0), ("42", 42), ("0100644", 0o100644), ("0x1ffffffffff", 0x1FFFFFFFFFF),
        ("0X1F", 31), ("12abc", 12), ("ef53", 0), ("", 0), ("  7", 7), ("-5", -5),
        ("+9", 9), ("0x", 0), ("089", 0), ("0xg", 0), ("9223372036854775807", (1 << 63) - 1),
        ("-9223372036854775808", -(1 << 63)), ("-0009223372036854775808", 0),  # octal: "000"
    ],
)
def test_strtoll_matches_c(text: str, value: int) -> None:
    assert strtoll(text) == value


@pytest.mark.parametrize("text", [
    "9223372036854775808", "-9223372036854775809", "0x" + "f" * 17,
    # more than 20 digits, either sign (a fuzzer found the negative one accepted as -2**63)
    "318925912395794554811", "-318925912395794554811", "-" + "9" * 30, " -" + "1" * 21 + "x",
])
def test_strtoll_out_of_range_is_an_error(text: str) -> None:
    with pytest.raises(InputError):
        strtoll(text, "x")


def test_ranges() -> None:
    assert u32("4294967295", "f") == 0xFFFFFFFF
    with pytest.raises(InputError, match="32 bits"):
        u32("4294967296", "f")
    with pytest.raises(InputError, match="32 bits"):
        u32("-1", "f")
    assert u16("0177777", "mode") == 0xFFFF
    with pytest.raises(InputError, match="16 bits"):
        u16("0200000", "mode")
    assert u64("-1", "cap") == (1 << 64) - 1


def test_hexbytes() -> None:
    assert hexbytes("00FFaa", "h") == b"\x00\xff\xaa"
    for bad in ("", "abc", "zz", "de ad", "0x00"):
        with pytest.raises(InputError):
            hexbytes(bad, "h")
    with pytest.raises(InputError, match="expected 32 bytes"):
        hexbytes("00" * 31, "h", 32)


def test_c_unescape() -> None:
    assert c_unescape(r"a\"b\\c\nd") == 'a"b\\cnd'
