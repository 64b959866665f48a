"""Text views: raw texts to averaged word vectors (the paper's Word2Vec featurizer)."""

from __future__ import annotations

import numbers
import zlib

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._optional import import_optional

__all__ = ["Word2VecMean"]


def _stable_hash(text):
    # gensim seeds each word's initial vector with hashfxn(word + seed); Python's hash()
    # is salted per process, so a fixed random_state would not repeat across runs
    return zlib.crc32(text.encode("utf-8"))


def _check_texts(X, what):
    """A list of str from a sequence of texts (or an (n,) / (n, 1) array of them)."""
    if isinstance(X, str | bytes):
        raise TypeError(f"{what}: expected a sequence of texts (a list of strings); got a "
                        "single string. Wrap it in a list.")
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 1:
            raise ValueError(f"{what}: expected a 1-D sequence of texts; got an array of shape "
                             f"{X.shape}.")
    try:
        texts = list(X)
    except TypeError:
        raise TypeError(f"{what}: expected a sequence of texts (a list of strings); got "
                        f"{type(X).__name__}.") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}: text {i} is a {type(t).__name__} ({t!r:.40}); every "
                            "entry must be a str (use '' for a missing text).")
    return texts


class Word2VecMean(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Texts to the mean of their words' Word2Vec vectors (section 4.2 of the MMEDA paper).

    ``fit`` trains a gensim :class:`~gensim.models.Word2Vec` on the tokenized training
    texts (or takes the one given as ``model``); ``transform`` averages the vectors of
    each text's words. Words not in the vocabulary are ignored; a text with no known word
    maps to the zero vector (never NaN).

    Parameters
    ----------
    model : gensim Word2Vec or KeyedVectors, default=None
        Pre-trained vectors to use as they are (``fit`` then trains nothing).
    tokenizer : callable, default=None
        ``str -> list of str``; default :func:`gensim.utils.simple_preprocess`
        (lower-cased alphabetic tokens of 2 to 15 characters).
    vector_size : int, default=100
        Dimension of the word vectors (ignored with ``model``).
    window : int, default=5
        Context window of Word2Vec.
    min_count : int, default=5
        Words seen fewer times in the corpus are left out of the vocabulary.
    sg : {0, 1}, default=0
        0 for CBOW, 1 for skip-gram.
    epochs : int, default=5
        Passes over the corpus.
    workers : int, default=1
        Training threads. Only ``workers=1`` is repeatable: with more, gensim's thread
        scheduling changes the result from run to run.
    random_state : int, RandomState instance or None, default=None
        Seeds Word2Vec (with a process-independent word hash, so the same value gives the
        same vectors in every run when ``workers=1``).

    Attributes
    ----------
    wv_ : gensim.models.KeyedVectors
        The word vectors.
    vector_size_ : int
        Their dimension (the output width).

    Examples
    --------
    >>> from mmfactor.text import Word2VecMean
    >>> texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"]
    >>> w2v = Word2VecMean(vector_size=8, min_count=1, random_state=0).fit(texts)
    >>> w2v.transform(["the cat", "unknown words only"]).shape
    (2, 8)
    """

    _parameter_constraints = {
        "model": [None, object],
        "tokenizer": [None, callable],
        "vector_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "window": [Interval(numbers.Integral, 1, None, closed="left")],
        "min_count": [Interval(numbers.Integral, 1, None, closed="left")],
        "sg": [Interval(numbers.Integral, 0, 1, closed="both")],
        "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "workers": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, model=None, *, tokenizer=None, vector_size=100, window=5, min_count=5,
                 sg=0, epochs=5, workers=1, random_state=None):
        self.model = model
        self.tokenizer = tokenizer
        self.vector_size = vector_size
        self.window = window
        self.min_count = min_count
        self.sg = sg
        self.epochs = epochs
        self.workers = workers
        self.random_state = random_state

    def _tokenize(self, texts):
        if self.tokenizer is None:
            tok = import_optional("gensim.utils", "Word2VecMean").simple_preprocess
        else:
            tok = self.tokenizer
        out = []
        for i, t in enumerate(texts):
            words = tok(t)
            if isinstance(words, str) or not all(isinstance(w, str) for w in words):
                raise TypeError(f"tokenizer must return a list of str; for text {i} it "
                                f"returned {type(words).__name__} {words!r:.60}.")
            out.append(list(words))
        return out

    def fit(self, X, y=None):
        """Train the word vectors on the texts ``X`` (or take ``model``).

        Parameters
        ----------
        X : sequence of str
            The corpus, one text per sample.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : Word2VecMean
            The fitted transformer.
        """
        self._validate_params()
        texts = _check_texts(X, "Word2VecMean.fit")
        if self.model is not None:
            models = import_optional("gensim.models", "Word2VecMean")
            KeyedVectors, Word2Vec = models.KeyedVectors, models.Word2Vec
            if isinstance(self.model, Word2Vec):
                wv = self.model.wv
            elif isinstance(self.model, KeyedVectors):
                wv = self.model
            else:
                raise TypeError(f"model must be a gensim Word2Vec or KeyedVectors; got "
                                f"{type(self.model).__name__}.")
        else:
            Word2Vec = import_optional("gensim.models", "Word2VecMean").Word2Vec
            if not texts:
                raise ValueError("Word2VecMean.fit: got an empty corpus (0 texts).")
            tokens = self._tokenize(texts)
            counts = {}
            for words in tokens:
                for w in words:
                    counts[w] = counts.get(w, 0) + 1
            if not any(c >= self.min_count for c in counts.values()):
                raise ValueError(
                    f"Word2VecMean.fit: no word of the {len(texts)} text(s) occurs at least "
                    f"min_count={self.min_count} times ({len(counts)} distinct tokens); "
                    "lower min_count or give a larger corpus."
                )
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
            wv = Word2Vec(sentences=tokens, vector_size=self.vector_size, window=self.window,
                          min_count=self.min_count, sg=self.sg, epochs=self.epochs,
                          workers=self.workers, seed=seed, hashfxn=_stable_hash).wv
        self.wv_ = wv
        self.vector_size_ = int(wv.vector_size)
        self._n_features_out = self.vector_size_
        return self

    def transform(self, X):
        """Average the vectors of each text's in-vocabulary words.

        Parameters
        ----------
        X : sequence of str
            Texts, seen in ``fit`` or not.

        Returns
        -------
        vectors : ndarray of shape (n_texts, ``vector_size_``), float32
            Zeros for a text without any known word.
        """
        check_is_fitted(self)
        texts = _check_texts(X, "Word2VecMean.transform")
        out = np.zeros((len(texts), self.vector_size_), dtype=np.float32)
        key_to_index = self.wv_.key_to_index
        for i, words in enumerate(self._tokenize(texts)):
            ids = [key_to_index[w] for w in words if w in key_to_index]
            if ids:
                out[i] = self.wv_.vectors[ids].mean(0)
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags
