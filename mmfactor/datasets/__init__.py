"""Data sets: ``load_*`` (shipped), ``fetch_*`` (downloaded into a cache), ``make_*``."""

from ._base import clear_data_home, get_data_home
from ._dicty import fetch_dicty
from ._goodreads import fetch_goodreads_books
from ._hypergraph import make_hypergraph
from ._lastfm import fetch_lastfm_hetrec
from ._mfeat import load_mfeat
from ._movielens import fetch_movielens_100k
from ._samples_generator import make_collective

__all__ = [
    "clear_data_home",
    "fetch_dicty",
    "fetch_goodreads_books",
    "fetch_lastfm_hetrec",
    "fetch_movielens_100k",
    "get_data_home",
    "load_mfeat",
    "make_collective",
    "make_hypergraph",
]
