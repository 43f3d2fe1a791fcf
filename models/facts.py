"""Sniffable's historical pupdates as immutable facts: generated from a seed, written once, read back.

A dataset is a JSONL file: a header line ``{"schema": "poochlab.pupdates", "schema_version": 1,
"seed": ..., "rows": ...}`` and then one pupdate per line with sorted keys. Writing is
byte-for-byte deterministic (the same seed and row count give the same file) and refuses to
replace an existing file: facts are never modified, only added as new datasets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from poochlab.models import ground_truth
from poochlab.models.pupdate import Pupdate

SCHEMA = "poochlab.pupdates"
SCHEMA_VERSION = 1
DEFAULT_ROWS = 20_000
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"


class FactsError(ValueError):
    """A facts file that cannot be written or read; the message names the file (and line)."""


def default_facts_path(seed: int, rows: int, data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """Where the dataset for ``seed`` and ``rows`` lives by default."""
    return Path(data_dir) / f"pupdates-seed{seed}-n{rows}.jsonl"


def generate_pupdates(n: int, seed: int) -> list[Pupdate]:
    """Draw ``n`` pupdates from :mod:`ground_truth`'s world; the same ``seed`` gives the same list."""
    if n < 1:
        raise ValueError(f"the number of pupdates must be at least 1 (got {n})")
    rng = np.random.default_rng(seed)

    user_count = max(1, n // ground_truth.PUPDATES_PER_USER)
    codes = [code for code, _, _ in ground_truth.COUNTRIES]
    shares = np.array([share for _, share, _ in ground_truth.COUNTRIES])
    user_countries = rng.choice(len(codes), size=user_count, p=shares / shares.sum())
    user_followers = np.minimum(
        np.floor(rng.lognormal(np.log(ground_truth.FOLLOWERS_MEDIAN), ground_truth.FOLLOWERS_LOG_SIGMA, user_count)),
        ground_truth.MAX_FOLLOWERS,
    ).astype(np.int64)

    vocabulary = ground_truth.tags_by_popularity()
    popularity = np.array(ground_truth.zipf_weights(len(vocabulary)))
    posters = rng.integers(0, user_count, size=n)
    tag_counts = np.minimum(rng.poisson(ground_truth.TAGS_PER_PUPDATE, size=n), ground_truth.MAX_TAGS)
    gaps = rng.exponential(ground_truth.SECONDS_PER_PUPDATE, size=n)
    timestamps = ground_truth.FIRST_TIMESTAMP + np.floor(np.cumsum(gaps)).astype(np.int64)

    pupdates = []
    for index in range(n):
        user = int(posters[index])
        tag_indices = rng.choice(len(vocabulary), size=int(tag_counts[index]), replace=False, p=popularity)
        hashtags = tuple(vocabulary[i] for i in tag_indices)
        country = codes[int(user_countries[user])]
        followers = int(user_followers[user])
        mu = ground_truth.expected_likes(hashtags, country, followers)
        dispersion = ground_truth.LIKES_DISPERSION
        likes = int(rng.negative_binomial(dispersion, dispersion / (dispersion + mu)))
        pupdates.append(
            Pupdate(
                id=f"pup-{seed}-{index:07d}",
                user_id=f"user-{seed}-{user:06d}",
                timestamp=int(timestamps[index]),
                hashtags=hashtags,
                country=country,
                followers=followers,
                likes=likes,
            )
        )
    return pupdates


def _row(pupdate: Pupdate) -> dict[str, Any]:
    return {
        "id": pupdate.id,
        "user_id": pupdate.user_id,
        "timestamp": pupdate.timestamp,
        "hashtags": list(pupdate.hashtags),
        "country": pupdate.country,
        "followers": pupdate.followers,
        "likes": pupdate.likes,
    }


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def write_facts(path: Path, pupdates: Iterable[Pupdate], seed: int | None = None) -> Path:
    """Write a new dataset at ``path``; raise :class:`FactsError` if anything is already there.

    The file appears complete or not at all: it is written beside its final name and then
    hard-linked into place, which fails rather than replaces when the name is taken.
    """
    path = Path(path)
    if path.exists():
        raise FactsError(f"{path} already exists; facts are written once and never replaced")
    rows = list(pupdates)
    header = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "seed": seed, "rows": len(rows)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FactsError(f"cannot create the folder for {path}: {error.strerror}") from error
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as out:
            out.write(_line(header))
            out.writelines(_line(_row(pupdate)) for pupdate in rows)
        os.link(partial, path)
    except FileExistsError as error:
        raise FactsError(f"{path} already exists; facts are written once and never replaced") from error
    except OSError as error:
        raise FactsError(f"cannot write {path}: {error.strerror}") from error
    finally:
        partial.unlink(missing_ok=True)
    return path


def _field(record: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in record:
        raise FactsError(f"{where}: field {name!r} is missing")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FactsError(f"{where}: field {name!r} has the wrong type ({type(value).__name__})")
    return value


def _pupdate(record: Any, where: str) -> Pupdate:
    if not isinstance(record, dict):
        raise FactsError(f"{where}: expected a JSON object, found {type(record).__name__}")
    hashtags = _field(record, "hashtags", list, where)
    if not all(isinstance(tag, str) for tag in hashtags):
        raise FactsError(f"{where}: field 'hashtags' must be a list of strings")
    followers = _field(record, "followers", int, where)
    likes = record.get("likes")
    if likes is not None and (isinstance(likes, bool) or not isinstance(likes, int) or likes < 0):
        raise FactsError(f"{where}: field 'likes' must be a non-negative integer or null")
    if followers < 0:
        raise FactsError(f"{where}: field 'followers' must not be negative")
    return Pupdate(
        id=_field(record, "id", str, where),
        user_id=_field(record, "user_id", str, where),
        timestamp=_field(record, "timestamp", int, where),
        hashtags=tuple(hashtags),
        country=_field(record, "country", str, where),
        followers=followers,
        likes=likes,
    )


def read_facts(path: Path) -> list[Pupdate]:
    """Read a dataset written by :func:`write_facts`; bad data raises :class:`FactsError` naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise FactsError(f"{path}: no such facts file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise FactsError(f"{path}: cannot read facts: {error}") from error
    lines = text.splitlines()
    if not lines:
        raise FactsError(f"{path}: empty file, expected a {SCHEMA} header line")
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise FactsError(f"{path}:{number}: not valid JSON ({error.msg})") from error
    header = records[0]
    if not isinstance(header, dict) or header.get("schema") != SCHEMA:
        raise FactsError(f"{path}:1: not a {SCHEMA} header")
    if header.get("schema_version") != SCHEMA_VERSION:
        raise FactsError(
            f"{path}:1: schema_version {header.get('schema_version')!r} is not supported (expected {SCHEMA_VERSION})"
        )
    pupdates = [_pupdate(record, f"{path}:{number}") for number, record in enumerate(records[1:], start=2)]
    if header.get("rows") != len(pupdates):
        raise FactsError(f"{path}:1: header says {header.get('rows')} rows but the file holds {len(pupdates)}")
    return pupdates
