"""Sniffable's facts: seeded, written once, byte-identical per seed, read back with clear errors."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest

from poochlab.models import ground_truth
from poochlab.models.facts import FactsError, generate_pupdates, read_facts, write_facts


@pytest.fixture(scope="module")
def pupdates():
    return generate_pupdates(3000, seed=11)


def test_same_seed_same_pupdates_and_other_seed_different() -> None:
    assert generate_pupdates(200, seed=3) == generate_pupdates(200, seed=3)
    assert generate_pupdates(200, seed=3) != generate_pupdates(200, seed=4)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = write_facts(tmp_path / "a" / "facts.jsonl", generate_pupdates(300, seed=5), seed=5)
    second = write_facts(tmp_path / "b" / "facts.jsonl", generate_pupdates(300, seed=5), seed=5)
    assert first.read_bytes() == second.read_bytes()


def test_round_trip(tmp_path: Path, pupdates) -> None:
    path = write_facts(tmp_path / "facts.jsonl", pupdates, seed=11)
    assert read_facts(path) == pupdates


def test_existing_dataset_is_never_replaced(tmp_path: Path) -> None:
    path = write_facts(tmp_path / "facts.jsonl", generate_pupdates(20, seed=1), seed=1)
    before = path.read_bytes()
    with pytest.raises(FactsError, match="already exists"):
        write_facts(path, generate_pupdates(20, seed=2), seed=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["facts.jsonl"]  # no partial file left behind


def _bad_file(folder: Path, line: str) -> Path:
    """A valid 3-row dataset whose line 3 is replaced by ``line``."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_facts(folder / "good.jsonl", generate_pupdates(3, seed=1), seed=1)
    lines = good.read_text().splitlines()
    lines[2] = line
    bad = folder / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    return bad


def test_bad_json_is_reported_with_file_and_line(tmp_path: Path) -> None:
    bad = _bad_file(tmp_path, "{not json")
    with pytest.raises(FactsError, match=rf"{bad}:3: not valid JSON"):
        read_facts(bad)


def test_missing_and_mistyped_fields_are_named(tmp_path: Path) -> None:
    row = json.loads(write_facts(tmp_path / "x.jsonl", generate_pupdates(1, seed=1), seed=1).read_text().splitlines()[1])
    del row["country"]
    with pytest.raises(FactsError, match=r"bad.jsonl:3: field 'country' is missing"):
        read_facts(_bad_file(tmp_path / "missing", json.dumps(row)))
    row["country"], row["followers"] = "US", "many"
    with pytest.raises(FactsError, match=r"bad.jsonl:3: field 'followers' has the wrong type"):
        read_facts(_bad_file(tmp_path / "mistyped", json.dumps(row)))


def test_unknown_schema_version_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "future.jsonl"
    path.write_text(json.dumps({"schema": "poochlab.pupdates", "schema_version": 99, "rows": 0}) + "\n")
    with pytest.raises(FactsError, match=r"future.jsonl:1: schema_version 99"):
        read_facts(path)
    with pytest.raises(FactsError, match="no such facts file"):
        read_facts(tmp_path / "absent.jsonl")


def test_hashtag_popularity_is_zipf_like_with_rare_spelling_variants(pupdates) -> None:
    counts = Counter(tag for p in pupdates for tag in p.hashtags)
    ranked = ground_truth.tags_by_popularity()
    # The most popular spelling is used far more than a mid-ranked one, which beats the tail.
    assert counts[ranked[0]] > 5 * counts[ranked[len(ranked) // 2]] > 0
    # Every idea's usual spelling is more common, in total, than its variants.
    usual = sum(counts[spellings[0]] for _, spellings, _ in ground_truth.CONCEPTS)
    variants = sum(counts[tag] for _, spellings, _ in ground_truth.CONCEPTS for tag in spellings[1:])
    assert usual > variants > 0
    assert counts["#adorabull"] > 0  # the misspelling exists in the data


def test_likes_depend_on_followers_and_hashtags(pupdates) -> None:
    by_followers = sorted(pupdates, key=lambda p: p.followers)
    quarter = len(by_followers) // 4
    assert statistics.mean(p.likes for p in by_followers[-quarter:]) > 2 * statistics.mean(p.likes for p in by_followers[:quarter])
    # Same followers band, loved idea (#corgi/#zoomies...) vs. an unloved one (#ad/#sponsored).
    loved = [p.likes / ground_truth.expected_likes((), p.country, p.followers) for p in pupdates if "#corgi" in p.hashtags]
    unloved = [p.likes / ground_truth.expected_likes((), p.country, p.followers) for p in pupdates if "#ad" in p.hashtags]
    assert loved and unloved and statistics.mean(loved) > statistics.mean(unloved)


def test_likes_are_noisy_counts(pupdates) -> None:
    likes = [p.likes for p in pupdates]
    assert all(isinstance(x, int) and x >= 0 for x in likes)
    # Negative-binomial noise: the same expected likes give widely different counts.
    residual = [p.likes / ground_truth.expected_likes(p.hashtags, p.country, p.followers) for p in pupdates]
    assert statistics.pstdev(residual) > 0.3
