"""Synthetic identity columns for the demo dataset (seeded; every value is made up).

The numbers are shaped like real identifiers so that redaction has something to find:
card numbers pass the Luhn check, national ids follow the US SSN layout, and the notes
also contain digit runs that are NOT card numbers (Luhn fails) and must survive.
"""

from __future__ import annotations

import numpy as np

_FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia", "Ken",
          "Margaret", "Dennis", "Shafi", "Leslie", "Hedy", "Tim", "Sophie", "Niklaus", "Joan", "Whitfield")
_LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "McCarthy", "Perlman",
         "Thompson", "Hamilton", "Ritchie", "Goldwasser", "Lamport", "Lamarr", "Berners", "Wilson", "Wirth",
         "Clarke", "Diffie")
_DOMAINS = ("example.org", "example.com", "mail.example.net")


def luhn_check_digit(payload: str) -> str:
    """The digit that makes `payload + digit` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these sit at odd positions once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


def card_number(rng: np.random.Generator) -> str:
    body = "4" + _digits(rng, 14)
    num = body + luhn_check_digit(body)
    sep = " " if rng.integers(0, 2) else "-"
    return sep.join(num[i:i + 4] for i in range(0, 16, 4))


def not_a_card(rng: np.random.Generator) -> str:
    """A 16-digit reference number that fails the Luhn check."""
    body = "7" + _digits(rng, 14)
    bad = (int(luhn_check_digit(body)) + 1 + int(rng.integers(0, 9))) % 10
    return body + str(bad)


def national_id(rng: np.random.Generator) -> str:
    area = int(rng.integers(1, 900))
    while area == 666:
        area = int(rng.integers(1, 900))
    return f"{area:03d}-{int(rng.integers(1, 100)):02d}-{int(rng.integers(1, 10000)):04d}"


def phone(rng: np.random.Generator) -> str:
    a, b, c = int(rng.integers(200, 1000)), int(rng.integers(200, 1000)), int(rng.integers(0, 10000))
    style = int(rng.integers(0, 3))
    if style == 0:
        return f"({a}) {b}-{c:04d}"
    if style == 1:
        return f"{a}-{b}-{c:04d}"
    return f"+1 {a} {b} {c:04d}"


def identities(n: int, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    cols: dict[str, list[str]] = {k: [] for k in ("patient_id", "name", "email", "phone", "national_id",
                                                  "card_number", "notes")}
    for i in range(n):
        first, last = _FIRST[int(rng.integers(0, len(_FIRST)))], _LAST[int(rng.integers(0, len(_LAST)))]
        email = f"{first}.{last}{int(rng.integers(1, 100))}@{_DOMAINS[int(rng.integers(0, 3))]}".lower()
        tel, nid, card = phone(rng), national_id(rng), card_number(rng)
        templates = (
            f"Patient called from {tel} about results.",
            f"Send follow-up to {email}; lab order {not_a_card(rng)}.",
            f"Billing card {card} on file, ID {nid} verified.",
            f"Reached at {tel}, email {email}, card {card}.",
            "No contact details recorded.",
        )
        cols["patient_id"].append(f"P{100000 + i}")
        cols["name"].append(f"{first} {last}")
        cols["email"].append(email)
        cols["phone"].append(tel)
        cols["national_id"].append(nid)
        cols["card_number"].append(card)
        cols["notes"].append(templates[int(rng.integers(0, len(templates)))])
    return cols
