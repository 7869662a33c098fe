"""The Python API (`fedrec.shared.api.Recommender`) on a synthetic model: names or ids in, the scores of the one
scoring entry point out, unknown items named."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.shared.api import Recommender, UnknownItemsError
from fedrec.shared.config import RunConfig
from fedrec.shared.data.synthetic import make_synthetic
from fedrec.shared.model.build import build_model
from fedrec.shared.model.export import export_trained
from fedrec.shared.model.recommender import trainable_state
from fedrec.shared.model.scoring import score_histories


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir) -> Recommender:
    """`Recommender.load` on the export of a tiny-Llama recommender over 40 synthetic items."""
    ds = make_synthetic(num_users=4, num_items=40, seed=5)
    cfg = RunConfig.from_mapping({"model.name": str(tiny_llama_dir)})
    model = build_model(cfg, ds.catalog, cached=False)
    state = {k: v.numpy() for k, v in trainable_state(model).items()}
    out = export_trained(tmp_path_factory.mktemp("api") / "model", model=model, cfg=cfg, catalog=ds.catalog,
                         state=state, run=None)
    return Recommender.load(out)


def test_recommend_unpacks_as_item_score_reasons_and_skips_the_history(rec: Recommender) -> None:
    """`for item, score, reasons in rec.recommend(history, k)`: k items, best first, none from the history, each
    reason a history item."""
    history = rec.catalog.names[:3]
    recs = rec.recommend(history, k=5)
    assert len(recs) == 5
    items = [item for item, _, _ in recs]
    scores = [score for _, score, _ in recs]
    assert scores == sorted(scores, reverse=True)
    assert not set(items) & set(history)
    assert all(set(reasons) <= set(history) and reasons for _, _, reasons in recs)


def test_score_equals_the_scoring_entry_point_for_names_and_ids(rec: Recommender) -> None:
    """`score(history, candidates)` is the row `score_histories` gives, at the candidates; names and ids mix."""
    cat = rec.catalog
    history = [cat.item_ids[0], cat.names[1].upper()]  # an id and a name in another case
    candidates = [cat.names[10], cat.item_ids[11], cat.names[0]]
    row = score_histories(rec.model, rec.cfg, cat, [rec.history(history)])[0]
    assert rec.score(history, candidates) == pytest.approx([row[10], row[11], row[0]])
    weighted = rec.history({cat.names[2]: 1.0, cat.names[3]: 9.0})  # a mapping gives the weights
    assert list(weighted.items) == [2, 3] and list(weighted.weights) == [1.0, 9.0]


def test_unknown_items_are_named_with_close_matches(rec: Recommender) -> None:
    """An unknown history item or candidate is an error naming it (and the closest catalog name); with
    strict=False unknown history items are skipped with a warning that lists them."""
    name = rec.catalog.names[4]
    with pytest.raises(UnknownItemsError, match=f"'{name[:-1]}' \\(did you mean '{name}'"):
        rec.recommend([rec.catalog.names[0], name[:-1]], k=3)
    with pytest.raises(UnknownItemsError, match="1 candidates not in the model's catalog: 'Nobody'"):
        rec.score([rec.catalog.names[0]], ["Nobody"])
    with pytest.warns(UserWarning, match="skipped 1 history items .*'Nobody'"):
        scores = rec.scores([rec.catalog.names[0], "Nobody"], strict=False)
    assert scores.shape == (len(rec.catalog),) and np.isfinite(scores).all()
    with pytest.raises(TypeError, match="not one string"):
        rec.history(rec.catalog.names[0])
