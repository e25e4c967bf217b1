"""bst.scoring: a model's scores for every evaluated user, aligned to the targets."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bst.data.prepared import Prepared
from bst.errors import DataError
from bst.metrics import EvalData, load_eval_data
from bst.model import Tables, build_model
from bst.scoring import Scorer, SplitInputs, align, aligned_scores


@pytest.fixture()
def model(tiny_cfg, prepared_dir):
    tf.keras.utils.set_random_seed(3)
    return build_model(tiny_cfg, Tables.from_prepared(Prepared.open(prepared_dir)))


def test_scorer_equals_the_full_models_last_position(tiny_cfg, model):
    """The last-position path over length-sorted, trimmed batches gives the full
    model's scores for every user, in the split's row order."""
    inputs = SplitInputs.read(tiny_cfg, "validation")
    expected = model({k: tf.constant(v) for k, v in inputs.inputs.items()}, training=False)
    got = Scorer(model)(inputs, batch_size=4)  # several batches of different widths
    np.testing.assert_allclose(got, expected["scores"].numpy(), rtol=1e-5, atol=1e-5)
    assert len(set(inputs.lengths.tolist())) > 1


def test_scores_follow_the_targets_row_order(tiny_cfg, model, prepared_dir):
    """Row i of the aligned scores is user data.user_ids[i]'s, whatever order the shards
    hold the users in: reversing the inputs' rows changes nothing, and each row is the
    model's answer for that user's own input row alone."""
    data = load_eval_data(prepared_dir, "test")
    inputs = SplitInputs.read(tiny_cfg, "test")
    scores = aligned_scores(model, tiny_cfg, "test", data, inputs)
    flipped = SplitInputs(
        inputs.users[::-1].copy(),
        {k: v[::-1].copy() for k, v in inputs.inputs.items()},
        inputs.lengths[::-1].copy(),
    )
    np.testing.assert_allclose(
        aligned_scores(model, tiny_cfg, "test", data, flipped), scores, atol=1e-6
    )
    assert not np.allclose(Scorer(model)(flipped), Scorer(model)(inputs))  # order matters
    for i, user in enumerate(data.user_ids[:5]):
        (row,) = np.flatnonzero(inputs.users == str(user))
        one = {k: tf.constant(v[row : row + 1]) for k, v in inputs.inputs.items()}
        alone = model(one, training=False)["scores"].numpy()[0]
        np.testing.assert_allclose(scores[i], alone, rtol=1e-5, atol=1e-5)


def test_a_user_missing_from_the_shards_is_one_data_error(prepared_dir):
    data = load_eval_data(prepared_dir, "test")
    fewer = EvalData.from_histories(
        data.histories, data.targets, data.num_items, [*data.user_ids[:-1], "nobody"]
    )
    with pytest.raises(DataError, match="missing from the shards .*first: nobody"):
        align(np.array(data.user_ids), fewer, "the shards")


def test_model_score_fn_gives_the_aligned_scores_a_chunk_at_a_time(tiny_cfg, model, prepared_dir):
    """Evaluation's bounded-memory path: any chunk of positions gets the rows of the whole
    aligned matrix, and its order lists the users by history length."""
    from bst.scoring import model_score_fn

    data = load_eval_data(prepared_dir, "test")
    whole = aligned_scores(model, tiny_cfg, "test", data)
    score_fn, order = model_score_fn(model, tiny_cfg, "test", data)
    assert sorted(order.tolist()) == list(range(data.num_users))
    lengths = np.array([min(len(h), tiny_cfg.model.max_len) for h in data.histories])
    assert np.all(np.diff(lengths[order]) >= 0)
    for chunk in (order[:7], order[7:20], np.array([3, 0, 11])):
        np.testing.assert_allclose(score_fn(chunk), whole[chunk], rtol=1e-5, atol=1e-5)
