"""bst.task: the training losses around the functional model."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bst import config
from bst.data.prepared import Prepared
from bst.model import Tables, build_model
from bst.pipeline import make_dataset
from bst.task import BSTTrainer


@pytest.fixture()
def tables(prepared_dir):
    return Tables.from_prepared(Prepared.open(prepared_dir))


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss, negatives", [("softmax", "shared"), ("sampled", "shared"), ("sampled", "in-batch")]
)
def test_training_steps_lower_the_loss(tiny_cfg, tables, loss, negatives):
    cfg = config.replace(
        tiny_cfg, {"model.loss": loss, "model.negatives": negatives, "model.num_negatives": 16}
    )
    tf.keras.utils.set_random_seed(0)
    trainer = BSTTrainer(build_model(cfg, tables), cfg, item_frequency=np.arange(tables.num_items))
    trainer.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    data = make_dataset(cfg, "train", batch_size=16)
    before = trainer.evaluate(make_dataset(cfg, "validation"), verbose=0)
    history = trainer.fit(data, epochs=8, verbose=0)
    after = trainer.evaluate(make_dataset(cfg, "validation"), verbose=0)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]
    assert after < before


@pytest.mark.slow
def test_rating_head(tiny_cfg, tables):
    cfg = config.replace(tiny_cfg, {"model.rating_head": True})
    trainer = BSTTrainer(build_model(cfg, tables), cfg)
    trainer.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    history = trainer.fit(make_dataset(cfg, "train", batch_size=16), epochs=3, verbose=0)
    mae = history.history["rating_mae"]
    assert np.isfinite(mae).all() and mae[-1] < mae[0]


def test_unknown_loss_is_rejected(tiny_cfg, tables):
    cfg = config.replace(tiny_cfg, {"model.loss": "hinge"})
    with pytest.raises(ValueError, match="model.loss must be 'auto', 'softmax' or 'sampled'"):
        BSTTrainer(build_model(cfg, tables), cfg)


def test_layer_regularizers_are_part_of_the_training_loss(tiny_cfg, tables):
    """``train_step`` adds ``model.losses``: a layer regularizer is not silently dropped."""
    tf.keras.utils.set_random_seed(0)
    cfg = config.replace(tiny_cfg, {"model.dropout": 0.0, "model.feature_dropout": 0.0})
    batch = next(iter(make_dataset(cfg, "train", batch_size=16, shuffle=False)))

    def first_step_loss(penalty: float) -> float:
        tf.keras.utils.set_random_seed(0)
        model = build_model(cfg, tables)
        if penalty:
            model.add_loss(
                lambda: penalty * tf.reduce_sum(tf.square(model.encoder.items.all_items()))
            )
        trainer = BSTTrainer(model, cfg)
        trainer.compile(optimizer=tf.keras.optimizers.SGD(0.0))
        return float(trainer.train_step(batch)["loss"])

    plain, regularized = first_step_loss(0.0), first_step_loss(10.0)
    assert regularized > plain + 1e-3


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {"train.jit_compile": "true"},  # XLA, the GPU/TPU default: static shapes
        {"train.mixed_precision": True},  # mixed_bfloat16 on a CPU
        {"train.bf16_logits": False},
    ],
)
def test_jit_and_mixed_precision_paths_build_and_take_a_step(tiny_cfg, tables, overrides):
    cfg = config.replace(tiny_cfg, overrides)
    policy = "mixed_bfloat16" if cfg.train.mixed_precision else "float32"
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        tf.keras.utils.set_random_seed(0)
        model = build_model(cfg, tables)
        trainer = BSTTrainer(model, cfg)
        trainer.compile(
            optimizer=tf.keras.optimizers.Adam(1e-2), jit_compile=cfg.train.jit_compile == "true"
        )
        history = trainer.fit(make_dataset(cfg, "train", batch_size=16), epochs=2, verbose=0)
        losses = history.history["loss"]
        assert np.isfinite(losses).all() and losses[-1] < losses[0]
        if cfg.train.mixed_precision:
            assert model.encoder.blocks[0].compute_dtype == "bfloat16"
            assert model.encoder.items.variables[0].dtype == tf.float32  # float32 weights
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def test_static_shape_loss_equals_the_gathered_loss(tiny_cfg, tables):
    """The XLA path's loss (every position, padding weighted 0) is the default loss."""
    features, labels = next(iter(make_dataset(tiny_cfg, "train", batch_size=16, shuffle=False)))
    tf.keras.utils.set_random_seed(0)
    model = build_model(tiny_cfg, tables)
    for bf16 in (False, True):
        plain = BSTTrainer(model, config.replace(tiny_cfg, {"train.bf16_logits": bf16}))
        static = BSTTrainer(
            model,
            config.replace(tiny_cfg, {"train.jit_compile": "true", "train.bf16_logits": bf16}),
        )
        a = float(plain.compute_loss_terms(features, labels, training=False))
        b = float(static.compute_loss_terms(features, labels, training=False))
        assert a == pytest.approx(b, rel=1e-2 if bf16 else 1e-5)


def _reference_cross_entropy(query, items, labels, weights, mask=None):
    logits = tf.matmul(query, items, transpose_b=True)
    if mask is not None:
        logits = tf.where(mask, -np.inf, logits)
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_sum(per_row * weights)


def _query_items_labels(seed, rows=7, columns=11, dim=5):
    rng = np.random.default_rng(seed)
    query = tf.constant(rng.normal(size=(rows, dim)) * 1.5, tf.float32)
    items = tf.constant(rng.normal(size=(columns, dim)), tf.float32)
    labels = rng.integers(0, columns, rows)
    labels[1] = labels[0]  # two rows with one label: its item gradient sums both
    return query, items, tf.constant(labels, tf.int32)


def test_catalog_cross_entropy_matches_tensorflows():
    """Values and gradients of the fused loss (one-hot taken out of the matmuls, the
    upstream gradient on the query side) equal TensorFlow's op over the logits matmul."""
    from bst.task import catalog_cross_entropy

    query, items, labels = _query_items_labels(0)
    weights = tf.range(1.0, 8.0)  # a non-uniform upstream gradient
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([query, items])
        ours = tf.reduce_sum(catalog_cross_entropy(query, items, labels) * weights)
        ref = _reference_cross_entropy(query, items, labels, weights)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5)
    for ours_grad, ref_grad in zip(
        tape.gradient(ours, [query, items]), tape.gradient(ref, [query, items]), strict=True
    ):
        np.testing.assert_allclose(ours_grad.numpy(), ref_grad.numpy(), atol=1e-5)


def test_catalog_cross_entropy_in_bfloat16_stays_close_and_returns_float32():
    """bf16 logits (``train.bf16_logits``): the matmuls and the softmax run in bfloat16
    (half the memory traffic); the loss and the gradients come back float32, within
    bfloat16 rounding of the float32 reference."""
    from bst.task import catalog_cross_entropy

    query, items, labels = _query_items_labels(1, rows=64, columns=300, dim=16)
    weights = tf.ones([64]) / 64.0
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([query, items])
        per_row = catalog_cross_entropy(query, items, labels, logits_dtype=tf.bfloat16)
        ours = tf.reduce_sum(per_row * weights)
        ref = _reference_cross_entropy(query, items, labels, weights)
    assert per_row.dtype == tf.float32
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-2)
    for ours_grad, ref_grad in zip(
        tape.gradient(ours, [query, items]), tape.gradient(ref, [query, items]), strict=True
    ):
        assert ours_grad.dtype == tf.float32
        err = np.linalg.norm(ours_grad.numpy() - ref_grad.numpy())
        assert err <= 2e-2 * np.linalg.norm(ref_grad.numpy())  # bfloat16 keeps 8 bits


def test_seen_mask_holds_each_tokens_earlier_movies_but_its_target():
    """``model.mask_seen``: token (b, t) leaves out the movies at positions <= t of row b
    (a repeat too), never its own target, never padding or the unknown movie."""
    from bst.features import NUM_RESERVED
    from bst.task import seen_mask

    ids = np.array([[0, 0, 5, 7, 5, 9], [3, 4, 1, 6, 3, 8]], np.int32)  # 1 = unknown movie
    target = np.array([[0, 0, 7, 5, 9, 4], [4, 1, 6, 3, 8, 2]], np.int32)
    valid = target >= NUM_RESERVED  # (b=1, t=1) has the unknown movie as target: no token
    got = seen_mask(tf.constant(ids), tf.constant(target), tf.constant(valid), 9).numpy()
    expected = []
    for b in range(2):
        for t in range(6):
            if valid[b, t]:
                row = np.zeros(9, bool)
                for s in range(t + 1):
                    if ids[b, s] >= NUM_RESERVED and ids[b, s] != target[b, t]:
                        row[ids[b, s] - NUM_RESERVED] = True
                expected.append(row)
    np.testing.assert_array_equal(got, np.array(expected))
    assert not got[1, 5 - NUM_RESERVED]  # movie 5 seen at t=2 is token 1's target


def test_masked_catalog_cross_entropy_leaves_the_masked_logits_out():
    from bst.task import catalog_cross_entropy

    query, items, labels = _query_items_labels(2, rows=4, columns=9)
    mask = np.zeros((4, 9), bool)
    mask[[0, 0, 1, 3], [1, 2, 0, 7]] = True
    unlabelled = sorted(set(range(9)) - set(labels.numpy().tolist()))[0]
    mask[:, unlabelled] = True  # left out of every row
    mask[np.arange(4), labels.numpy()] = False  # never a row's label
    weights = tf.ones([4])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([query, items])
        ours = tf.reduce_sum(catalog_cross_entropy(query, items, labels, tf.constant(mask)))
        ref = _reference_cross_entropy(query, items, labels, weights, tf.constant(mask))
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5)
    grads = tape.gradient(ours, [query, items])
    for ours_grad, ref_grad in zip(grads, tape.gradient(ref, [query, items]), strict=True):
        np.testing.assert_allclose(ours_grad.numpy(), ref_grad.numpy(), atol=1e-5)
    assert (grads[1].numpy()[unlabelled] == 0).all()  # no row saw it: no gradient


def test_mask_seen_loss_equals_a_brute_force_masked_softmax(tiny_cfg, tables):
    """The loss with model.mask_seen is, token by token, the cross-entropy of a softmax
    over the movies that token's history has not seen (its own target always kept), and
    without it over every movie: both counted here one token at a time in numpy."""
    from bst import features as F
    from bst.model import model_inputs

    cfg = config.replace(tiny_cfg, {"train.bf16_logits": False})
    features, labels = next(iter(make_dataset(cfg, "train", batch_size=16, shuffle=False)))
    model = build_model(cfg, tables)
    on = BSTTrainer(model, cfg)
    off = BSTTrainer(model, config.replace(cfg, {"model.mask_seen": False}))
    catalog = on.items.all_items(False)
    query = model.encoder(model_inputs(features), training=False, catalog=catalog).numpy()
    items = catalog.numpy()[F.NUM_RESERVED :]
    ids, target = features[F.MOVIE_ID].numpy(), labels[F.NEXT_MOVIE].numpy()
    masked, unmasked, removed = [], [], 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if target[b, t] < F.NUM_RESERVED:
                continue
            logits = items @ query[b, t].astype(np.float64)
            label = target[b, t] - F.NUM_RESERVED
            seen = {int(i) - F.NUM_RESERVED for i in ids[b, : t + 1] if i >= F.NUM_RESERVED}
            seen.discard(int(label))
            removed += len(seen)
            for row, drop in ((masked, seen), (unmasked, set())):
                keep = [j for j in range(len(items)) if j not in drop]
                top = logits[keep].max()
                row.append(top + np.log(np.exp(logits[keep] - top).sum()) - logits[label])
    assert removed > 0  # the batch has histories to mask
    got_on = float(on.compute_loss_terms(features, labels, training=False))
    got_off = float(off.compute_loss_terms(features, labels, training=False))
    assert got_on == pytest.approx(np.mean(masked), rel=1e-5)
    assert got_off == pytest.approx(np.mean(unmasked), rel=1e-5)
    assert got_on < got_off


def test_a_batch_without_a_valid_target_has_a_finite_loss(tiny_cfg, tables):
    """Every target padding or unknown: loss 0 and zero gradients, on the default and
    the static-shape (XLA) path and with the rating head (no known rating), not NaN."""
    from bst import features as F

    batch, labels = next(iter(make_dataset(tiny_cfg, "train", batch_size=4, shuffle=False)))
    labels = {**labels, F.NEXT_MOVIE: tf.fill(tf.shape(labels[F.NEXT_MOVIE]), F.OOV)}
    for jit, rating_head in (("false", False), ("true", False), ("false", True)):
        cfg = config.replace(tiny_cfg, {"train.jit_compile": jit, "model.rating_head": rating_head})
        trainer = BSTTrainer(build_model(cfg, tables), cfg)
        with tf.GradientTape() as tape:
            loss = trainer.compute_loss_terms(batch, labels, training=False)
        grads = tape.gradient(loss, trainer.trainable_variables)
        assert float(loss) == 0.0, jit
        assert all(np.all(np.isfinite(tf.convert_to_tensor(g))) for g in grads if g is not None)


REPLICA_SCRIPT = """
import json, sys
import bst
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from bst import config
from bst.data.prepared import Prepared
from bst.model import Tables, build_model
from bst.pipeline import make_dataset
from bst.task import BSTTrainer

overrides = json.loads(sys.argv[2])
cfg = config.replace(config.tiny(), {"data.prepared_dir": sys.argv[1], "model.max_len": 6,
    "model.dropout": 0.0, "model.feature_dropout": 0.0,
    "train.bf16_logits": False,  # bfloat16 rounds the per-replica sums differently
    **overrides})
tables = Tables.from_prepared(Prepared.open(sys.argv[1]))
batch = make_dataset(cfg, "train", batch_size=8, shuffle=False).take(1)
tf.keras.utils.set_random_seed(0)
initial = build_model(cfg, tables).get_weights()
out = {}
for name, strategy in (
    ("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
    ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
):
    with strategy.scope():
        trainer = BSTTrainer(build_model(cfg, tables), cfg)
        trainer.compile(optimizer=tf.keras.optimizers.SGD(1.0))
        trainer(next(iter(batch))[0], training=False)
        trainer.model.set_weights(initial)
        if trainer.rating_head is not None:  # built with the trainer: the first one's
            trainer.rating_head(tf.zeros([1, 2 * cfg.model.dim]))
        if trainer.rating_head is not None:  # built with the trainer: the first one's
            if name == "one":
                head = trainer.rating_head.get_weights()
            trainer.rating_head.set_weights(head)
    history = trainer.fit(batch, epochs=1, verbose=0)
    out[name] = {
        "replicas": strategy.num_replicas_in_sync,
        "loss": history.history["loss"][0],
        "delta": [float(np.abs(a - b).sum()) for a, b in zip(trainer.model.get_weights(), initial)],
        "weights": [w.tolist() for w in trainer.model.get_weights()],
    }
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [{}, {"train.jit_compile": "true"}, {"model.rating_head": True}],
    ids=["default", "static-shapes", "rating-head"],
)
def test_two_replicas_take_the_step_one_device_takes_on_the_same_global_batch(
    prepared_dir, overrides
):
    """The loss is the global batch's mean, so the gradients the optimizer sums over two
    replicas (2 logical CPUs, 4 users each, different token counts) are one device's on
    all 8: one SGD step lands on the same weights, and the loss shown is the same."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run(
        [sys.executable, "-c", REPLICA_SCRIPT, str(prepared_dir), json.dumps(overrides)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    one, two = out["one"], out["two"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert sum(one["delta"]) > 0  # the step moved the weights
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    for a, b in zip(one["weights"], two["weights"], strict=True):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
@pytest.mark.parametrize("masked", [False, True])
def test_chunked_cross_entropy_gives_the_one_pass_values_and_gradients(chunk, masked):
    """Chunks of 1, 3 (7 rows: a short last chunk), 7 and more rows than there are: the
    same per-row losses and gradients as one pass, and as TensorFlow's op."""
    from bst.task import catalog_cross_entropy, chunked_catalog_cross_entropy

    query, items, labels = _query_items_labels(4)
    mask = None
    if masked:
        mask = np.random.default_rng(5).random((7, 11)) < 0.3
        mask[np.arange(7), labels.numpy()] = False  # never a row's label
        mask = tf.constant(mask)
    weights = tf.range(1.0, 8.0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([query, items])
        one = catalog_cross_entropy(query, items, labels, mask)
        rows = None if mask is None else (lambda a, z: mask[a:z])
        chunked = chunked_catalog_cross_entropy(query, items, labels, chunk, rows)
        ours, theirs = tf.reduce_sum(chunked * weights), tf.reduce_sum(one * weights)
        ref = _reference_cross_entropy(query, items, labels, weights, mask)
    np.testing.assert_allclose(chunked.numpy(), one.numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5)
    for a, b, c in zip(
        tape.gradient(ours, [query, items]),
        tape.gradient(theirs, [query, items]),
        tape.gradient(ref, [query, items]),
        strict=True,
    ):
        # the items' gradient is summed over chunks: float32 rounding of another order
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.numpy(), c.numpy(), atol=1e-5)


def test_a_catalog_past_the_logits_bound_trains_in_chunks_with_the_same_loss(tiny_cfg, tables):
    """train.logits_mib small enough that a tiny batch does not fit: the trainer takes
    the chunked path (seen mask per chunk) and its loss and gradients are the one-pass
    trainer's."""
    cfg = config.replace(tiny_cfg, {"train.bf16_logits": False, "model.dropout": 0.0})
    batch, labels = next(iter(make_dataset(cfg, "train", batch_size=16, shuffle=False)))
    model = build_model(cfg, tables)
    whole = BSTTrainer(model, cfg)
    parts = BSTTrainer(model, config.replace(cfg, {"train.logits_mib": 0}))
    assert whole.chunk is None and parts.chunk is None  # 0 = always one pass
    parts.chunk = 5  # what a bound under 5 tokens' logits gives (loss_chunk)
    results = []
    for trainer in (whole, parts):
        with tf.GradientTape() as tape:
            loss = trainer.compute_loss_terms(batch, labels, training=False)
        grads = tape.gradient(loss, model.trainable_variables)
        results.append(
            (float(loss), [tf.convert_to_tensor(g).numpy() for g in grads if g is not None])
        )
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_loss_chunk_keeps_one_pass_for_ml1m_and_bounds_large_catalogs():
    from bst.task import logits_bytes_per_entry, loss_chunk

    cfg = config.replace(config.ml1m(), {"train.batch_size": 128})
    assert loss_chunk(cfg, 3_706) is None  # ML-1M: under 1 GiB of logits, one pass
    no_bf16 = config.replace(cfg, {"train.bf16_logits": False})
    assert loss_chunk(no_bf16, 3_706) is None  # also where bfloat16 is off: 1.4 GiB
    rows = loss_chunk(cfg, 59_047)  # ML-25M's catalog: 12.7 GiB a batch in one pass
    assert rows is not None
    assert rows * 59_047 * logits_bytes_per_entry(True, True) <= 2 * 2**30
    assert (rows + 1) * 59_047 * logits_bytes_per_entry(True, True) > 2 * 2**30
    assert loss_chunk(config.replace(cfg, {"train.logits_mib": 0}), 59_047) is None
    bigger = config.replace(cfg, {"train.logits_mib": 4096})
    assert abs(loss_chunk(bigger, 59_047) - 2 * rows) <= 1


def test_shared_negatives_are_distinct_and_their_chances_add_up_to_the_draw():
    """Each draw is ``num`` distinct columns; ``log_q`` is each column's chance to be
    drawn (summing to ``num``), and over many draws the columns come up that often."""
    from bst.task import SharedNegatives

    counts = (np.arange(50) + 3.0) ** -1.1 * 1000  # a popularity law
    sampler = SharedNegatives(counts, 12, distortion=0.75)
    chance = np.exp(sampler.log_q.numpy())
    assert chance.sum() == pytest.approx(12.0, rel=1e-4)
    assert np.all(np.diff(chance) < 0)  # more popular, more often drawn
    tf.random.set_seed(0)
    seen = np.zeros(50)
    for _ in range(2000):
        draw = sampler().numpy()
        assert len(set(draw.tolist())) == 12 and draw.min() >= 0 and draw.max() < 50
        seen[draw] += 1
    # the approximation of drawing without replacement: within a few points
    np.testing.assert_allclose(seen / 2000, chance, atol=0.05)
    every = SharedNegatives(counts, 80)  # at least the catalog: every column, log_q 0
    assert sorted(every().numpy().tolist()) == list(range(50))
    assert np.all(every.log_q.numpy() == 0.0)


@pytest.mark.parametrize("masked", [False, True])
def test_sampled_cross_entropy_over_every_column_is_the_full_softmax(masked):
    """With every column a negative and log_q 0 the sampled loss is the full softmax
    (values and gradients): the label's own column is left out as an accidental hit."""
    from bst.task import catalog_cross_entropy, sampled_cross_entropy

    query, items, labels = _query_items_labels(3)
    negatives = tf.range(11)
    mask = None
    if masked:
        mask = np.random.default_rng(5).random((7, 11)) < 0.3
        mask[np.arange(7), labels.numpy()] = False
        mask = tf.constant(mask)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([query, items])
        ours = sampled_cross_entropy(query, items, labels, negatives, tf.zeros(11), mask)
        full = catalog_cross_entropy(query, items, labels, mask)
    np.testing.assert_allclose(ours.numpy(), full.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(
        tape.gradient(ours, [query, items]), tape.gradient(full, [query, items]), strict=True
    ):
        a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)  # gathers: IndexedSlices
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)


def test_sampled_cross_entropy_by_hand():
    """One row, two negatives with log-Q: -log(e^(s+ - q+) / sum of e^(s - q)), the
    negative that is the row's label and a masked one left out."""
    from bst.task import sampled_cross_entropy

    query = tf.constant([[1.0, 2.0]])
    items = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]])
    log_q = tf.constant([-1.0, -2.0, -0.5, -3.0])
    # label 2; negatives 0, 1, 2 (its own label: left out) and 3 (masked)
    mask = tf.constant([[False, False, False, True]])
    loss = sampled_cross_entropy(
        query, items, tf.constant([2]), tf.constant([0, 1, 2, 3]), log_q, mask
    )
    logits = np.array([3.0 + 0.5, 1.0 + 1.0, 2.0 + 2.0])  # label, negative 0, negative 1
    expected = -(logits[0] - np.log(np.exp(logits).sum()))
    assert float(loss[0]) == pytest.approx(expected, rel=1e-6)


def test_auto_loss_is_the_full_softmax_where_logits_fit_and_sampled_past_them():
    from bst.loss_choice import choose_loss

    cfg = config.replace(config.ml1m(), {"train.batch_size": 128})
    assert cfg.model.loss == "auto"
    assert choose_loss(cfg, 3_706)[0] == "softmax"  # ML-1M: unchanged
    loss, why = choose_loss(cfg, 59_047)
    assert loss == "sampled" and "train.logits_mib" in why
    assert choose_loss(config.replace(cfg, {"train.logits_mib": 0}), 59_047)[0] == "softmax"
    given = config.replace(cfg, {"model.loss": "softmax"})
    assert choose_loss(given, 59_047) == ("softmax", "model.loss=softmax")
    # where the full softmax fits, a machine whose full softmax step is slow samples
    loss, why = choose_loss(cfg, 3_706, measured=(0.205, 0.140))
    assert loss == "sampled" and "205 ms" in why and "1.46x" in why
    assert choose_loss(cfg, 3_706, measured=(0.103, 0.104))[0] == "softmax"
    assert choose_loss(given, 3_706, measured=(0.205, 0.140))[0] == "softmax"  # as given


def test_time_loss_step_times_both_losses():
    from bst.loss_choice import time_loss_step

    cfg = config.replace(
        config.ml1m(),
        {"train.batch_size": 4, "model.max_len": 12, "model.dim": 8, "model.num_negatives": 10},
    )
    for kind in ("softmax", "sampled"):
        seconds = time_loss_step(cfg, 30, kind, steps=2)
        assert 0 < seconds < 30


def test_shared_negatives_mask_the_movies_each_history_holds(tiny_cfg, tables):
    """With every movie drawn, the shared-negatives loss of a batch equals the full
    softmax's (seen mask and all): the same mask, applied to the drawn columns."""
    cfg = config.replace(
        tiny_cfg, {"train.bf16_logits": False, "model.dropout": 0.0, "model.feature_dropout": 0.0}
    )
    batch, labels = next(iter(make_dataset(cfg, "train", batch_size=16, shuffle=False)))
    model = build_model(cfg, tables)
    full = BSTTrainer(model, config.replace(cfg, {"model.loss": "softmax"}))
    sampled = BSTTrainer(
        model, config.replace(cfg, {"model.loss": "sampled", "model.num_negatives": 10_000})
    )
    assert sampled.negatives is not None and sampled.mask_seen
    a = float(full.compute_loss_terms(batch, labels, training=False))
    b = float(sampled.compute_loss_terms(batch, labels, training=False))
    assert b == pytest.approx(a, rel=1e-5)
    unmasked = BSTTrainer(
        model,
        config.replace(
            cfg,
            {"model.loss": "sampled", "model.num_negatives": 10_000, "model.mask_seen": False},
        ),
    )
    assert float(unmasked.compute_loss_terms(batch, labels, training=False)) > b
