"""Long seeded fuzz run of the input parsers (the hypothesis tests' bigger sibling).

Feeds mutated JSON export records, legacy lines, model files and whole
multi-line trajectories into ``parse_record``, ``parse_legacy``, ``parse_model``
and the streaming reader. The only acceptable outcomes are a record (whose
coefficient can be computed) or an ``InputError``; anything else is a crash,
grouped by exception type and raising line, shrunk to a small reproducer and
printed. Also counts JSON records whose coefficient changes after a
``format_event`` round trip (control characters excluded: the reference's
escape rule cannot carry them).

Every fuzzed JSON line also goes to the quick coefficient path
(``QuickCoefficients.of_line``, used by ``points`` and ``replay``), checked against
the full parser (``parse_record_bytes``): (A) no answer where the full path gives
no event, (B) any answer equal to the event's coefficient, (C) no exception. A
fresh instance and a long-lived one (whose raw-text caches persist) are checked.

Usage::

    python bench/fuzz_parsers.py [--inputs 200000] [--seed 1]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import sys
import time
import traceback
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semtrust.errors import InputError
from semtrust.events.jsonexport import format_event, parse_record, parse_record_bytes
from semtrust.events.legacy import parse_legacy
from semtrust.events.names import EVENT_NAMES, LEGACY_NAMES
from semtrust.events.reader import iter_records
from semtrust.events.record import Event, LegacyEvent
from semtrust.model.coefficient import event_coefficient
from semtrust.model.modelfile import parse_model, render_model
from semtrust.model.quick import QuickCoefficients
from semtrust.model.signing import generate_key, public_pem, sign_model_text
from semtrust.model.tma import TMA

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "data" / "vectors"
# Legacy cell types the vector file lacks (spec §3.5); shared with the unit tests.
EXTRA_LEGACY = (VECTORS.parent / "legacy-cells.txt").read_text().splitlines()
NUMBERS = [
    "-1", "-0", "+5", " 12", "0x", "0xg", "0X1F", "08", "1e5", "1.5", "", " ", "٣", "１２",
    "0x" + "f" * 40, "-9223372036854775809", "9223372036854775807", "18446744073709551616",
    "4294967296", "4294967295", "65536", "\x00", "nan", "0" * 5000 + "1", "9" * 4301,
    "1" * 20000, "-" + "9" * 5000, "0x" + "f" * 5000, "0" + "7" * 5000,
]


class Fuzzer:
    """Seeded mutators over valid seed inputs."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.json_seeds = [
            line for name in ("events18.json", "test-trajectory.json")
            for line in (VECTORS / name).read_text().splitlines() if line.strip()
        ]
        self.json_objs = [json.loads(line) for line in self.json_seeds]
        self.legacy_seeds = (VECTORS / "test-trajectory.txt").read_text().splitlines()
        self.legacy_seeds += EXTRA_LEGACY
        tma = TMA()
        for line in self.json_seeds[:18]:
            rec = parse_record(line)
            if isinstance(rec, Event):
                tma.update(rec)
        plain = render_model(tma)
        key = generate_key("rsa")
        self.pem = public_pem(key)
        self.model_seeds = [
            plain.encode(),
            ("# c\nbase " + "11" * 32 + "\npseudonym " + "22" * 32 + "\n" + plain).encode(),
            sign_model_text(plain, key).encode(),
            ("key " + base64.b64encode(public_pem(generate_key("ed25519"))).decode()
             + "\n" + plain).encode(),
        ]

    # ------------------------------------------------------------------ values
    def text(self, n: int = 12) -> str:
        r = self.r
        pools = ("abc/._- ", "\\\"{}[],:=", "\x00\x01\t\n\x7f", "éü中𝄞\u200b\ufeff", "0123456789")
        return "".join(r.choice(r.choice(pools)) for _ in range(r.randrange(n + 1)))

    def number(self) -> str:
        r = self.r
        k = r.randrange(6)
        if k == 0:
            return r.choice(NUMBERS)
        if k == 1:
            return str(r.randrange(-(1 << 70), 1 << 70))
        if k == 2:
            return hex(r.randrange(1 << 70))
        if k == 3:
            return "0" + oct(r.randrange(1 << 40))[2:]
        if k == 4:
            return r.choice("0123456789") * r.randrange(1, 6000)
        return str(r.randrange(1 << 32))

    def hexish(self) -> str:
        r = self.r
        if r.random() < 0.5:
            return r.randbytes(r.choice((0, 1, 8, 15, 16, 17, 31, 32, 33, 64))).hex()
        return "".join(r.choice("0123456789abcdefABCDEFxg -") for _ in range(r.randrange(70)))

    def garbage(self, depth: int = 0) -> Any:
        r = self.r
        k = r.randrange(10 if depth < 3 else 7)
        if k == 0:
            return self.text()
        if k == 1:
            return self.number()
        if k == 2:
            return self.hexish()
        if k == 3:
            return r.choice([r.randrange(-(1 << 80), 1 << 80), r.random() * 1e300, None, True,
                             False, float("inf"), float("nan"), -0.0, 10**4000])
        if k in (4, 5, 6):
            return r.choice([self.number(), self.hexish(), ""])
        if k in (7, 8):
            return [self.garbage(depth + 1) for _ in range(r.randrange(3))]
        return {self.text(6): self.garbage(depth + 1) for _ in range(r.randrange(3))}

    # --------------------------------------------------------------- mutators
    def mutate_bytes(self, data: bytes) -> bytes:
        r = self.r
        for _ in range(r.randrange(1, 4)):
            n = len(data)
            i = r.randrange(n + 1)
            op = r.randrange(7)
            if op == 0 and n:
                i = min(i, n - 1)
                data = data[:i] + bytes([data[i] ^ r.randrange(1, 256)]) + data[i + 1:]
            elif op == 1:
                data = data[:i]
            elif op == 2:
                data = data[:i] + r.randbytes(r.randrange(1, 9)) + data[i:]
            elif op == 3:
                data = data[:i] + data[i + r.randrange(1, 17):]
            elif op == 4:
                data = data[:i] + data[i:i + r.randrange(1, 65)] + data[i:]
            elif op == 5:
                data = data[:i] + r.choice([b"\\", b"\\u0000", b'\\"', b"\\\\", b"\\ud800",
                                            b"\xed\xa0\x80", b"\xff", b"\x00"]) + data[i:]
            else:
                j = r.randrange(n + 1)
                data = data[:i] + r.choice([b'"', b"{", b"}", b"[", b"]", b",", b":", b"="]) \
                    + data[j:] if j >= i else data
        return data

    def json_line(self) -> str:
        r = self.r
        k = r.randrange(10)
        if k == 0:
            return r.randbytes(r.randrange(200)).decode("utf-8", "surrogateescape")
        if k == 1:
            return self.text(200)
        obj = json.loads(json.dumps(r.choice(self.json_objs)))
        nest = False
        for _ in range(r.randrange(1, 5)):
            paths = _paths(obj)
            if not paths:
                break
            path = r.choice(paths)
            parent = _parent(obj, path)
            if not isinstance(parent, dict) or path[-1] not in parent:
                continue
            op = r.randrange(8)
            if op == 0:
                del parent[path[-1]]
            elif op in (1, 2, 3):
                parent[path[-1]] = self.garbage()
            elif op == 4:
                parent[self.text(8)] = parent.pop(path[-1])
            elif op == 5:
                parent[self.text(8)] = self.garbage()
            elif op == 6 and path[-1] == "type":
                parent["type"] = r.choice((*EVENT_NAMES, "", "bogus", "aggregate", "log"))
            else:
                parent[path[-1]] = "@@nest@@"
                nest = True
        text = json.dumps(obj, ensure_ascii=r.random() < 0.5,
                          separators=r.choice([(", ", ": "), (",", ":"), (" , ", " : ")]))
        if nest:
            depth = r.choice((1, 10, 100, 1000, 5000, 100000))
            text = text.replace('"@@nest@@"', "[" * depth + "{}" + "]" * depth)
        if r.random() < 0.4:
            text = self.mutate_bytes(text.encode("utf-8", "surrogateescape")).decode(
                "utf-8", "surrogateescape")
        return text

    def legacy_line(self) -> str:
        r = self.r
        if r.random() < 0.1:
            return r.randbytes(r.randrange(200)).decode("utf-8", "surrogateescape")
        line = r.choice(self.legacy_seeds)
        for _ in range(r.randrange(1, 4)):
            pairs = line.split(", ")
            op = r.randrange(5)
            if op == 0:
                i = r.randrange(len(pairs))
                key, sep, _ = pairs[i].partition("=")
                new = r.choice([self.number(), self.hexish(), self.text()])
                pairs[i] = key + sep + new if sep else pairs[i] + "=" + new
                line = ", ".join(pairs)
            elif op == 1 and len(pairs) > 1:
                del pairs[r.randrange(len(pairs))]
                line = ", ".join(pairs)
            elif op == 2:
                name = r.choice((*LEGACY_NAMES, "", "bogus"))
                old = line.split("type=", 1)[-1].split(",")[0]
                line = line.replace(old, name, 1)
            elif op == 3:
                clauses = line.split("} ")
                i = r.randrange(len(clauses))
                if r.random() < 0.5:
                    del clauses[i]
                else:
                    clauses.insert(i, clauses[i])
                line = "} ".join(clauses)
            else:
                line = self.mutate_bytes(line.encode("utf-8", "surrogateescape")).decode(
                    "utf-8", "surrogateescape")
        return line

    def model(self) -> tuple[bytes, dict[str, Any]]:
        r = self.r
        kw: dict[str, Any] = {"allow_unsigned": r.random() < 0.5}
        if r.random() < 0.1:
            kw["key_pem"] = r.choice([self.pem, b"", b"junk", self.mutate_bytes(self.pem)])
        if r.random() < 0.05:
            return r.randbytes(r.randrange(400)), kw
        lines = r.choice(self.model_seeds).split(b"\n")
        for _ in range(r.randrange(1, 4)):
            i = r.randrange(max(1, len(lines)))
            op = r.randrange(8)
            if op == 0 and lines:
                del lines[i]
            elif op == 1 and lines:
                lines.insert(i, lines[i])
            elif op == 2:
                word = r.choice([b"state ", b"base ", b"aggregate ", b"pseudonym ", b"key ",
                                 b"signature ", b"seal", b"end", b"# ", b"", b"state  ",
                                 b"state\t"])
                lines.insert(i, word + r.choice([self.hexish(), self.text(40)]).encode(
                    "utf-8", "surrogatepass"))
            elif op == 3 and lines:
                head, _, _ = lines[i].partition(b" ")
                lines[i] = head + b" " + self.hexish().encode()
            elif op == 4:
                # A key line whose PEM body (DER) is damaged: exercises the key loader.
                pem = self.pem.split(b"\n")
                der = base64.b64decode(b"".join(pem[1:-2]))
                der = self.mutate_bytes(der)
                body = base64.encodebytes(der)
                blob = b"-----BEGIN PUBLIC KEY-----\n" + body + b"-----END PUBLIC KEY-----\n"
                lines = [ln for ln in lines if not ln.startswith(b"key ")]
                lines.insert(0, b"key " + base64.b64encode(blob))
            elif op == 5:
                lines.append(b"signature " + base64.b64encode(r.randbytes(r.choice((0, 1, 255,
                                                                                     256, 257)))))
            elif op == 6:
                lines = [ln.replace(b"\n", b"\r\n") + (b"\r" if r.random() < 0.3 else b"")
                         for ln in lines]
            else:
                lines = self.mutate_bytes(b"\n".join(lines)).split(b"\n")
        return b"\n".join(lines), kw

    def trajectory(self) -> bytes:
        """Several lines for the streaming reader (format detection, blank lines, EOF)."""
        r = self.r
        legacy = r.random() < 0.4
        lines = [(self.legacy_line() if legacy else self.json_line()).encode(
            "utf-8", "surrogateescape") for _ in range(r.randrange(1, 5))]
        if r.random() < 0.3:
            lines.insert(r.randrange(len(lines) + 1), r.choice([b"", b"   ", b"\r", b"\t"]))
        data = b"\n".join(lines)
        return data + (b"\n" if r.random() < 0.7 else b"")


def _paths(obj: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out.extend(_paths(v, (*prefix, k)))
    return out


def _parent(obj: Any, path: tuple[str, ...]) -> Any:
    for k in path[:-1]:
        obj = obj[k]
    return obj


# ------------------------------------------------------------------------ targets

def t_json(text: str) -> None:
    try:
        rec = parse_record(text, source="fuzz", line=1)
    except InputError:
        return
    if isinstance(rec, Event):
        event_coefficient(rec)


def t_legacy(text: str) -> None:
    try:
        ev = parse_legacy(text, source="fuzz", lineno=1)
    except InputError:
        return
    event_coefficient(ev)


def t_model(data: bytes, kw: dict[str, Any]) -> None:
    try:
        parse_model(data, source="fuzz.model", **kw)
    except InputError:
        return


def t_reader(data: bytes) -> None:
    try:
        for _, rec in iter_records(io.BytesIO(data), source="fuzz"):
            if isinstance(rec, Event | LegacyEvent):
                event_coefficient(rec)
    except InputError:
        return


def _line_bytes(text: str) -> bytes:
    """The fuzzed line as a file holds it."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def quick_check(raw: bytes, q: QuickCoefficients) -> tuple[bool, tuple[str, str] | None]:
    """The quick path on one line: whether it answered, and None when its contract
    holds, else ``(kind, detail)`` with kind ``crash`` (C), ``A`` or ``B``."""
    try:
        got = q.of_line(raw)
    except Exception as exc:
        return False, ("crash", f"{_signature(exc)}: {exc}"[:300])
    if got is None:
        return False, None
    try:
        rec = parse_record_bytes(raw, source="fuzz", line=1)
    except InputError:
        return True, ("A", f"quick answered {got.hex()}, the full path gives no event")
    except Exception:  # a full-parser crash: the json target reports those
        return True, None
    if not isinstance(rec, Event):
        return True, ("A", f"quick answered {got.hex()} for a {type(rec).__name__}")
    want = event_coefficient(rec)
    if got != want:
        return True, ("B", f"quick answered {got.hex()}, the full path {want.hex()}")
    return True, None


def _has_cc(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def roundtrip_ok(text: str) -> bool | None:
    """None if not applicable; else whether format_event keeps the coefficient."""
    try:
        rec = parse_record(text)
    except InputError:
        return None
    if not isinstance(rec, Event) or "\\" in text or _has_cc(text):
        return None
    try:
        again = parse_record(format_event(rec))
    except InputError:
        return False
    return isinstance(again, Event) and event_coefficient(again) == event_coefficient(rec)


def _signature(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
    return f"{type(exc).__name__} at {where}"


def shrink(data: Any, crashes: Callable[[Any], bool], budget: float = 5.0) -> Any:
    """Greedy chunk removal while the same crash reproduces (str or bytes)."""
    deadline = time.monotonic() + budget
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i = 0
        changed = False
        while i < len(data) and time.monotonic() < deadline:
            cand = data[:i] + data[i + chunk:]
            if cand and crashes(cand):
                data = cand
                changed = True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="seeded fuzzing of semtrust's parsers")
    ap.add_argument("--inputs", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", metavar="DIR", help="write each crash's full reproducer here")
    a = ap.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    fz = Fuzzer(a.seed)
    counts = {"json": 0, "legacy": 0, "model": 0, "reader": 0}
    crashes: dict[str, tuple[str, Any, str]] = {}
    crash_count = 0
    rt_checked = rt_bad = 0
    rt_example = ""
    shared_quick = QuickCoefficients()  # caches persist across the whole run
    q_tried = q_answered = q_crashes = q_div_a = q_div_b = 0
    q_found: dict[str, tuple[bytes, str]] = {}
    t0 = time.monotonic()
    for _ in range(a.inputs):
        k = fz.r.random()
        kind = "json" if k < 0.45 else "legacy" if k < 0.75 else "model" if k < 0.9 else "reader"
        counts[kind] += 1
        kw: dict[str, Any] = {}
        if kind == "json":
            data: Any = fz.json_line()
            call: Callable[[Any], None] = t_json
        elif kind == "legacy":
            data, call = fz.legacy_line(), t_legacy
        elif kind == "model":
            data, kw = fz.model()
            call = lambda d, kw=kw: t_model(d, kw)  # noqa: E731
        else:
            data, call = fz.trajectory(), t_reader
        if kind == "json":
            raw = _line_bytes(data)
            q_tried += 1
            answered, found = quick_check(raw, QuickCoefficients())
            q_answered += answered
            where = "fresh"
            if found is None:
                found = quick_check(raw, shared_quick)[1]
                where = "long-lived"
            if found is not None:
                what, detail = found
                q_crashes += what == "crash"
                q_div_a += what == "A"
                q_div_b += what == "B"
                sig = f"{what} ({where})" + (f": {detail.split(':')[0]}" if what == "crash"
                                              else "")
                if sig not in q_found:
                    def same_quick(d: bytes, what: str = what) -> bool:
                        r = quick_check(d, QuickCoefficients())[1]
                        return r is not None and r[0] == what
                    example = shrink(raw, same_quick) if where == "fresh" else raw
                    q_found[sig] = (example, detail)
        try:
            call(data)
        except Exception as exc:  # any non-InputError is the finding
            crash_count += 1
            sig = f"{kind}: {_signature(exc)}"
            if sig not in crashes:
                def same(d: Any, sig: str = sig, call: Callable[[Any], None] = call,
                         kind: str = kind) -> bool:
                    try:
                        call(d)
                    except Exception as e:
                        return f"{kind}: {_signature(e)}" == sig
                    return False
                crashes[sig] = (kind, shrink(data, same), f"{type(exc).__name__}: {exc}"[:300])
            continue
        if kind == "json" and rt_checked < 50_000:
            ok = roundtrip_ok(data)
            if ok is not None:
                rt_checked += 1
                if not ok:
                    rt_bad += 1
                    rt_example = rt_example or data
    elapsed = time.monotonic() - t0
    total = sum(counts.values())
    print(f"{total} inputs in {elapsed:.1f}s (seed {a.seed}): "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"{crash_count} crashes, {len(crashes)} distinct")
    for n, (sig, (kind, example, message)) in enumerate(crashes.items()):
        print(f"- {sig}\n    {message}\n    minimal {kind} input: {example!r}"[:2000])
        if a.save:
            out = Path(a.save) / f"crash-{n}-{kind}.bin"
            out.parent.mkdir(parents=True, exist_ok=True)
            raw = example if isinstance(example, bytes) else example.encode(
                "utf-8", "surrogateescape")
            out.write_bytes(raw)
            print(f"    saved: {out} ({len(raw)} bytes)")
    print(f"format_event round trips: {rt_checked} checked, {rt_bad} changed the coefficient")
    if rt_example:
        print(f"    example: {rt_example!r}"[:1500])
    print(f"quick path: {q_tried} json inputs, {q_answered} answered, {q_crashes} crashes, "
          f"{q_div_a + q_div_b} divergences (A {q_div_a}, B {q_div_b}), "
          f"{len(q_found)} distinct")
    for n, (sig, (example, detail)) in enumerate(q_found.items()):
        print(f"- quick {sig}\n    {detail}\n    minimal input: {example!r}"[:2000])
        if a.save:
            out = Path(a.save) / f"quick-{n}.bin"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(example)
            print(f"    saved: {out} ({len(example)} bytes)")
    return 1 if crashes or q_found else 0


if __name__ == "__main__":
    sys.exit(main())
