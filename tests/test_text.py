import pickle

import numpy as np
import pytest
from gensim.models import Word2Vec
from gensim.test.utils import datapath
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmfactor.text import Word2VecMean


@pytest.fixture(scope="module")
def lee():
    with open(datapath("lee_background.cor"), encoding="utf-8") as f:
        return [line for line in f.read().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fitted(lee):
    return Word2VecMean(vector_size=32, min_count=3, epochs=5, random_state=0).fit(lee)


def test_real_corpus_shapes_and_means(lee, fitted):
    Z = fitted.transform(lee[:20])
    assert Z.shape == (20, 32) and Z.dtype == np.float32
    assert np.isfinite(Z).all()
    # the vector of a text is the mean of its in-vocabulary words' vectors
    from gensim.utils import simple_preprocess

    words = [w for w in simple_preprocess(lee[3]) if w in fitted.wv_.key_to_index]
    assert words
    np.testing.assert_allclose(Z[3], fitted.wv_[words].mean(0), rtol=1e-5, atol=1e-6)
    assert fitted.vector_size_ == 32
    assert len(fitted.wv_.key_to_index) > 500
    assert list(fitted.get_feature_names_out()[:2]) == ["word2vecmean0", "word2vecmean1"]


def test_related_texts_are_closer(lee, fitted):
    # averaged vectors carry topic: a text is closer to itself with a few words dropped
    # than to the average other text of the corpus
    Z = fitted.transform(lee)
    trimmed = fitted.transform([" ".join(t.split()[5:]) for t in lee[:30]])

    def cos(a, b):
        return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))

    same = cos(Z[:30], trimmed)
    other = np.array([cos(Z[(i + 100) % len(Z)], trimmed[i]) for i in range(30)])
    assert same.mean() > other.mean()


def test_unknown_words_give_zeros_not_nan(fitted):
    Z = fitted.transform(["zzqx qqwv", "", "the government zzqx"])
    assert np.all(Z[0] == 0) and np.all(Z[1] == 0)
    np.testing.assert_allclose(Z[2], fitted.wv_[["the", "government"]].mean(0), rtol=1e-5)


def test_same_random_state_same_vectors(lee):
    a = Word2VecMean(vector_size=16, min_count=5, epochs=2, random_state=3).fit_transform(lee)
    b = Word2VecMean(vector_size=16, min_count=5, epochs=2, random_state=3).fit_transform(lee)
    c = Word2VecMean(vector_size=16, min_count=5, epochs=2, random_state=4).fit_transform(lee)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_given_model_and_tokenizer(lee):
    tokens = [t.lower().split() for t in lee]
    w2v = Word2Vec(tokens, vector_size=12, min_count=2, workers=1, seed=0, epochs=1)
    est = Word2VecMean(w2v, tokenizer=lambda t: t.lower().split())
    Z = est.fit(["unused"]).transform(lee[:3])
    assert est.wv_ is w2v.wv and Z.shape == (3, 12)
    # KeyedVectors are accepted as well; nothing is trained then
    assert Word2VecMean(w2v.wv).fit([]).vector_size_ == 12


def test_pipeline_clone_and_pickle(lee, fitted):
    pipe = make_pipeline(Word2VecMean(vector_size=8, min_count=2, random_state=0),
                         StandardScaler())
    out = pipe.fit_transform(lee[:100])
    assert out.shape == (100, 8)
    clone(fitted)
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.transform(lee[:5]), fitted.transform(lee[:5]))
    # an (n, 1) column of texts, as a ColumnTransformer passes it
    np.testing.assert_array_equal(
        fitted.transform(np.array(lee[:4], dtype=object)[:, None]), fitted.transform(lee[:4])
    )


def test_errors(lee, fitted):
    with pytest.raises(TypeError, match="got a single string"):
        Word2VecMean().fit("just one text")
    with pytest.raises(TypeError, match="text 1 is a int"):
        fitted.transform(["ok", 3])
    with pytest.raises(ValueError, match="empty corpus"):
        Word2VecMean().fit([])
    with pytest.raises(ValueError, match="min_count=50"):
        Word2VecMean(min_count=50).fit(["a few words", "only"])
    with pytest.raises(TypeError, match="gensim Word2Vec or KeyedVectors"):
        Word2VecMean(model="glove").fit(lee)
    with pytest.raises(TypeError, match="tokenizer must return a list of str"):
        Word2VecMean(tokenizer=lambda t: t, min_count=1).fit(lee[:3])
    with pytest.raises(ValueError, match="array of shape"):
        fitted.transform(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="vector_size"):
        Word2VecMean(vector_size=0).fit(lee)
