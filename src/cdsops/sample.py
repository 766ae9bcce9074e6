"""The bundled synthetic sample of registrations (invented people only).

``python -m cdsops.sample write PATH`` regenerates the bundled CSV deterministically;
``python -m cdsops.sample redate SRC DEST [--to ISO8601]`` shifts every time in a CSV
so that its newest registration lies just before ``--to`` (default: now), so the demo
shows active, expired and re-admitted students whatever the date.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

from .registrations import COLUMNS, parse_time
from .times import UTC, format_iso, utcnow

REFERENCE = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SYLLABLES = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "ze", "po", "li", "an", "or", "el", "fi"]
CITIES = [("Avalon", "Nowhere"), ("Brigadoon", "Fictland"), ("Cibola", "Imaginaria"), ("Dunwich", "Fictland"), ("Erewhon", "Utopia")]
DOMAINS = ["example.edu", "example.org", "students.example.ac.uk", "gmail.com"]


def _name(rng: random.Random) -> tuple[str, str]:
    first = "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()
    last = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
    return first, last


Row = tuple[datetime, dict[str, str]]


def _row(t: datetime, email: str, name: str, city: tuple[str, str], dua: str = "Yes", terms: str = "Yes") -> Row:
    return (
        t,
        {
            "submitted_at": format_iso(t),
            "email": email,
            "full_name": name,
            "city": city[0],
            "country": city[1],
            "agreed_dua": dua,
            "agreed_terms": terms,
        },
    )


def _people(rng: random.Random, count: int = 165) -> list[tuple[str, str, str, str]]:
    """(first, last, local part, domain) of ``count`` invented people with distinct names."""
    people = []
    seen = set()
    while len(people) < count:
        first, last = _name(rng)
        if (first, last) in seen:
            continue
        seen.add((first, last))
        domain = rng.choice(DOMAINS)
        people.append((first, last, f"{first}.{last}".lower(), domain))
    return people


def _person_rows(rng: random.Random, i: int, person: tuple[str, str, str, str]) -> list[Row]:
    """Person ``i``'s rows: expired (i < 15), re-admitted (15-19), resubmitted (20-34), aliases (35-44)."""
    first, last, local, domain = person
    city = rng.choice(CITIES)
    name = f"{first} {last}"
    if i < 15:  # registered long ago only: expired
        t = REFERENCE - timedelta(days=rng.randint(200, 240), minutes=rng.randint(0, 1440))
    else:
        t = REFERENCE - timedelta(days=rng.randint(0, 150), minutes=rng.randint(0, 1440))
    rows = [_row(t, f"{local}@{domain}", name, city)]
    if 15 <= i < 20:  # re-admitted: an old admission that expired, then a new one
        rows.append(_row(t - timedelta(days=rng.randint(190, 230)), f"{local}@{domain}", name, city))
    if 20 <= i < 35:  # submitted twice (form resubmitted), same address
        rows.append(_row(t + timedelta(minutes=rng.randint(1, 90)), f"{local}@{domain}", name, city))
    if 35 <= i < 45 and domain == "gmail.com":  # Gmail aliases of the same person
        alias = rng.choice([local.replace(".", "") + "+mimic", local.upper(), local])
        rows.append(_row(t + timedelta(days=rng.randint(1, 20)), f" {alias}@googlemail.com ", name, city))
    elif 35 <= i < 45:
        rows.append(_row(t + timedelta(days=rng.randint(1, 20)), f"{local.upper()}@{domain.upper()}", name, city))
    return rows


BAD_ROWS = [
    dict(email="", name="Nomail Person"),
    dict(email="not-an-address", name="Malformed Address"),
    dict(email="two@@example.org", name="Double At"),
    dict(email="x" * 290 + "@example.org", name="Overlong Address"),
    dict(email="robert');DROP TABLE students;--@example.org", name="Bobby Tables"),
    dict(email="nodua@example.org", name="No Agreement", dua="No"),
    dict(email="noterms@example.org", name="No Terms", terms=""),
    dict(email="ctrl@example.org", name="Bell\x07Char"),
    dict(email="badtime@example.org", name="Bad Time", time="yesterday-ish"),
    dict(email="-dash@example.org\nsecond line", name="Newline Address"),
]


def _bad_rows() -> list[Row]:
    t0 = REFERENCE - timedelta(days=3)
    rows = []
    for j, b in enumerate(BAD_ROWS):
        row = _row(t0 + timedelta(minutes=j), b["email"], b["name"], CITIES[0], b.get("dua", "Yes"), b.get("terms", "Yes"))
        if "time" in b:
            row[1]["submitted_at"] = b["time"]
        rows.append(row)
    return rows


def generate(seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows: list[Row] = []
    for i, person in enumerate(_people(rng)):
        rows += _person_rows(rng, i, person)
    rows += _bad_rows()
    rows.sort(key=lambda r: (r[0], r[1]["email"]))
    return [r for _, r in rows]


def write(path: str | Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)


def redate(src: str | Path, dest: str | Path, to: datetime) -> timedelta:
    with open(src, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    times = []
    for r in rows:
        try:
            times.append(parse_time(r["submitted_at"]))
        except ValueError:
            pass
    # whole days, so that re-running the demo on the same day gives the same rows
    shift = timedelta(days=((to - timedelta(hours=1)) - max(times)).days) if times else timedelta(0)
    for r in rows:
        try:
            r["submitted_at"] = format_iso(parse_time(r["submitted_at"]) + shift)
        except ValueError:
            pass
    write(dest, rows)
    return shift


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cdsops.sample")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("path")
    r = sub.add_parser("redate")
    r.add_argument("src")
    r.add_argument("dest")
    r.add_argument("--to")
    args = p.parse_args(argv)
    if args.cmd == "write":
        write(args.path, generate())
        return 0
    to = parse_time(args.to) if args.to else utcnow()
    shift = redate(args.src, args.dest, to)
    print(f"re-dated {args.src} by {shift.days} days into {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
