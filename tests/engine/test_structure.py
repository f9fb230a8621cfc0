"""CKA and the structure losses (FSD, PKD, RKD, MiniLM): properties, hand values, gradients,
and a tiny student trained with each of them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny import tiny_study

from kd_search.engine.hyperparameters import default_hyperparameters
from kd_search.engine.losses import (
    STRUCTURE_LOSSES,
    SelfAttentionPair,
    attention_distribution_loss,
    linear_cka,
    structure_objective,
    value_relation_loss,
)
from kd_search.engine.losses.structure import (
    fsd_intra_loss,
    fsd_local_loss,
    pkd_loss,
    rkd_angle_loss,
    rkd_distance_loss,
)
from kd_search.engine.spec import parse_study
from kd_search.engine.trial import run_trial


def numpy_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA straight from FSD eq. 4-5: HSIC with the centring matrix H and linear kernels."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


def test_cka_properties():
    torch.manual_seed(0)
    x, y = torch.randn(12, 6, dtype=torch.float64), torch.randn(12, 9, dtype=torch.float64)
    assert float(linear_cka(x, x)) == pytest.approx(1.0)
    assert float(linear_cka(x, y)) == pytest.approx(float(linear_cka(y, x)))  # symmetric
    assert float(linear_cka(x, y)) == pytest.approx(numpy_cka(x.numpy(), y.numpy()), rel=1e-5)  # widths differ
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    assert float(linear_cka(x @ rotation, y)) == pytest.approx(float(linear_cka(x, y)), rel=1e-5)  # orthogonal
    assert float(linear_cka(7.5 * x, y)) == pytest.approx(float(linear_cka(x, y)), rel=1e-5)  # isotropic scale
    assert 0 <= float(linear_cka(x, y)) <= 1


def test_cka_batched_with_padding_equals_unpadded():
    torch.manual_seed(1)
    x, y = torch.randn(2, 7, 4), torch.randn(2, 7, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    batched = linear_cka(x, y, mask)
    assert float(batched[0]) == pytest.approx(numpy_cka(x[0, :5].double().numpy(), y[0, :5].double().numpy()), rel=1e-4)
    assert float(batched[1]) == pytest.approx(numpy_cka(x[1].double().numpy(), y[1].double().numpy()), rel=1e-4)
    assert float(linear_cka(torch.ones(4, 3), x[0, :4])) == 0.0  # a constant representation: 0, not NaN


def test_structure_losses_by_hand():
    # PKD: [3, 4] and [0, 1] normalise to [0.6, 0.8] and [0, 1]: 0.36 + 0.04.
    assert float(pkd_loss([torch.tensor([[3.0, 4.0]])], [torch.tensor([[0.0, 1.0]])])) == pytest.approx(0.4)
    # RKD distance: three points on a line at 0, 1, 2 vs 0, 1, 3 (each normalised by its mean distance).
    s, t = torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[0.0], [1.0], [3.0]])
    ds = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]]) / (8 / 6)
    dt = np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]]) / (12 / 6)
    diff = np.abs(ds - dt)
    huber = np.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).mean()
    assert float(rkd_distance_loss(s, t)) == pytest.approx(huber, rel=1e-5)
    # RKD angle: a right angle against a straight line, at the middle point.
    square = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert float(rkd_angle_loss(square, square)) == pytest.approx(0.0, abs=1e-7)
    assert float(rkd_angle_loss(square, torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]]))) > 0
    # FSD: identical structures cost nothing, unrelated ones cost more.
    h = torch.randn(3, 6, 8)
    mask = torch.ones(3, 6)
    assert float(fsd_intra_loss(h, h @ torch.linalg.qr(torch.randn(8, 8))[0], mask)) == pytest.approx(0.0, abs=1e-5)
    assert float(fsd_local_loss(h, torch.randn(3, 6, 8), mask)) > 0.05


@pytest.mark.parametrize("name", ["fsd_intra", "fsd_local", "pkd", "rkd_distance", "rkd_angle"])
def test_each_structure_loss_passes_gradcheck_and_reaches_only_the_student(name):
    torch.manual_seed(2)
    student = [torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    teacher = [torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])

    def loss(*hidden):
        return structure_objective(list(hidden), [t.detach() for t in teacher], mask, {name: 1.0}).double()

    assert torch.autograd.gradcheck(loss, tuple(student), eps=1e-6, atol=1e-4)
    structure_objective(student, [t.detach() for t in teacher], mask, {name: 1.0}).backward()
    assert student[-1].grad is not None and teacher[-1].grad is None


@pytest.mark.parametrize("name", STRUCTURE_LOSSES)
def test_each_structure_loss_trains_a_tiny_student(tmp_path, name):
    study = parse_study(tiny_study(tmp_path))
    result = run_trial(study, {f"weight_{name}": 1.0}, workdir=tmp_path / "work")
    metrics = result.metrics
    assert math.isfinite(metrics["train_loss"]) and result.params[f"weight_{name}"] == 1.0
    assert 0 <= metrics["accuracy"] <= 1
    if name == "fsd_global":  # the teacher memory was computed once, beside the teacher outputs
        assert len(list((tmp_path / "cache" / "fsd-memory").glob("*.safetensors"))) == 1
    if name.startswith("minilm"):  # the teacher's last-layer value vectors were cached
        assert len(list((tmp_path / "cache").glob("*/train_values_2.npy"))) == 1


def test_fsd_global_loss_by_hand_and_gradcheck():
    from kd_search.engine.losses.structure import fsd_global_loss

    memory = torch.eye(2)
    # Teacher feature [1, 0]: distances to the items 0 and sqrt 2 (scaled by their mean: 0, 2),
    # cosines 1 and 0. Student feature [0, 1]: scaled distances 2, 0 and cosines 0, 1. Same memory
    # structure (CKA 1): 0 + mean((2-0)^2, (0-2)^2) + mean(1, 1) = 5.
    loss = fsd_global_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), memory, memory)
    assert float(loss) == pytest.approx(5.0)
    torch.manual_seed(0)
    features, items = torch.randn(4, 3, dtype=torch.float64, requires_grad=True), \
        torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    teacher_features, teacher_items = torch.randn(4, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f, m: fsd_global_loss(f, teacher_features, m, teacher_items),
                                    (features, items), eps=1e-6, atol=1e-4)


def test_minilm_losses_by_hand():
    # Attention: the teacher spreads a query's attention evenly over 2 tokens, the student
    # puts 3/4 on the first: KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3) per query.
    teacher = torch.zeros(1, 1, 3, 3)
    student = torch.tensor([math.log(3.0), 0.0, 0.0]).expand(1, 1, 3, 3).clone()
    mask = torch.tensor([[1, 1, 0]])
    # The padded key and query (index 2) are ignored, whatever they hold.
    teacher[..., 2], student[..., 2], student[:, :, 2] = 50.0, -7.0, 9.0
    assert float(attention_distribution_loss(student, teacher, mask)) == pytest.approx(0.5 * math.log(4 / 3))
    # Value relation: teacher values [1, 0], [0, 1] relate each token to itself by 1/sqrt 2,
    # student values [1, 0], [1, 0] relate both tokens equally (uniform rows).
    p = 1 / (1 + math.exp(-1 / math.sqrt(2)))
    expected = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    loss = value_relation_loss(torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),
                               torch.ones(1, 2), heads=1)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Widths differ (relation heads of 2 and 4 dims): identical relations still cost nothing.
    # Each teacher head repeats the student's head, scaled so that V V^T / sqrt(d_k) agree.
    values = torch.randn(2, 5, 4)
    heads = values.split(2, dim=-1)
    teacher_values = torch.cat([torch.cat([h, h], -1) for h in heads], -1) * 2 ** -0.25
    assert float(value_relation_loss(values, teacher_values, torch.ones(2, 5), heads=2)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="does not split into 3 relation heads"):
        value_relation_loss(values, values, torch.ones(2, 5), heads=3)
    # Head counts differ: the student's one head against the teacher's mean distribution.
    teacher_heads = torch.randn(2, 2, 5, 5)
    mean_distribution = teacher_heads.softmax(-1).mean(1, keepdim=True)
    assert float(attention_distribution_loss(mean_distribution.log(), teacher_heads, torch.ones(2, 5))) \
        == pytest.approx(0.0, abs=1e-6)


def test_minilm_losses_pass_gradcheck_and_reach_only_the_student():
    torch.manual_seed(3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    hidden = [torch.randn(2, 4, 6, dtype=torch.float64)] * 2
    teacher_scores, teacher_values = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64)
    student_scores = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    student_values = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)

    def loss(scores, values):
        return structure_objective(hidden, hidden, mask, {"minilm_attention": 1.0, "minilm_value": 0.5},
                                   attention=SelfAttentionPair(scores, teacher_scores, values, teacher_values))

    assert torch.autograd.gradcheck(loss, (student_scores, student_values), eps=1e-6, atol=1e-4)
    teacher_values.requires_grad_(True)
    loss(student_scores, student_values).backward()
    assert student_values.grad is not None and teacher_values.grad is None
    with pytest.raises(ValueError, match="minilm losses need"):
        structure_objective(hidden, hidden, mask, {"minilm_value": 1.0})


def test_capture_values_records_the_value_projection(tmp_path):
    from tiny import tiny_teacher_dir
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from kd_search.engine.models import capture_values, load_classifier
    from kd_search.errors import ModelError

    model = load_classifier(str(tiny_teacher_dir(tmp_path)), 2).eval()
    ids = torch.tensor([[2, 5, 6, 3]])
    with torch.no_grad(), capture_values(model, [2]) as values:
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    expected = model.bert.encoder.layer[1].attention.self.value(hidden[1])
    torch.testing.assert_close(values[2], expected)
    model(input_ids=ids)
    assert values[2] is not None and not model.bert.encoder.layer[1].attention.self.value._forward_hooks
    other = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=30, dim=32, n_layers=1, n_heads=2,
                                                                 hidden_dim=64))
    with torch.no_grad(), capture_values(other, [1]) as values:  # DistilBERT's is attention.v_lin
        hidden = other(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(values[1], other.distilbert.transformer.layer[0].attention.v_lin(hidden[0]))
    with pytest.raises(ModelError, match="DistilBertForSequenceClassification has no value projection found in layer 2"):
        with capture_values(other, [2]):
            pass


def test_kmeans_memory_converges_on_separable_data(tmp_path):
    from kd_search.engine.teacher_memory import kmeans, teacher_memory

    torch.manual_seed(0)
    centers = torch.tensor([[0.0] * 5, [10.0] * 5, [-10.0, 10.0, -10.0, 10.0, -10.0]])
    points = torch.cat([c + 0.2 * torch.randn(40, 5) for c in centers])
    centroids = kmeans(points, 3, seed=1)
    nearest = torch.cdist(centers, centroids).min(dim=1).values
    assert float(nearest.max()) < 0.15  # every blob found, centroid at its mean
    assignment = torch.cdist(points, centroids).argmin(dim=1).reshape(3, 40)
    assert all(len(set(row.tolist())) == 1 for row in assignment) and len(set(assignment[:, 0].tolist())) == 3
    calls = []

    def features():
        calls.append(1)
        return points

    first = teacher_memory(tmp_path / "memory.safetensors", features, 3)
    again = teacher_memory(tmp_path / "memory.safetensors", features, 3)
    assert torch.equal(first, again) and len(calls) == 1  # computed once, then read from the cache


def test_structure_weights_are_searchable_names():
    study = parse_study({"name": "s", "student": {"teacher_layers": [2]}, "distillation": {"structure": {"pkd": 0.5}},
                         "search": {"space": {"weight_fsd_intra": {"low": 0.0, "high": 2.0}}}})
    defaults = default_hyperparameters(study, 1)
    assert defaults["weight_pkd"] == 0.5 and defaults["weight_fsd_intra"] == 0.0


def test_trial_reports_layer_similarity_to_the_teacher(tmp_path):
    from kd_search.engine.losses.cka import linear_cka_by_features

    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 6, dtype=torch.float64)
    assert float(linear_cka_by_features(x, y)) == pytest.approx(float(linear_cka(x, y)))
    result = run_trial(parse_study(tiny_study(tmp_path)), {}, workdir=tmp_path / "work")
    matrix = result.outputs["cka_matrix"]
    assert matrix.shape == (2, 2)  # embeddings + one mapped layer, student x teacher
    assert np.all((matrix >= 0) & (matrix <= 1 + 1e-9))
    assert result.metrics["cka_diagonal"] == pytest.approx(float(np.mean(np.diagonal(matrix))))
    assert matrix[0, 0] > 0.99  # the student's embeddings are copied from the teacher's (then trained briefly)
    relations = {k: v for k, v in result.metrics.items() if k.startswith("relation_")}
    assert set(relations) == {"relation_intra_distance", "relation_intra_cosine", "relation_inter_distance",
                              "relation_inter_cosine"}
    assert all(np.isfinite(v) and v >= 0 for v in relations.values())


def test_relation_differences_by_hand():
    from kd_search.engine.analysis import relation_differences

    # Two tokens at distance 5 in the teacher; the student doubles every vector.
    teacher = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [7.0, 7.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    d = relation_differences(2 * teacher, teacher, mask)
    # Pairs of real tokens: (0,0), (0,1), (1,0), (1,1); distances 0, 5, 5, 0 -> 0, 10, 10, 0.
    assert d["intra_distance"] == pytest.approx((5 + 5) / 4)
    assert d["intra_cosine"] == pytest.approx(0.0)  # scaling keeps every angle
    assert d["inter_distance"] == pytest.approx(0.0) and d["inter_cosine"] == pytest.approx(0.0)  # one sample
    padded = teacher.clone()
    padded[0, 2] = torch.tensor([100.0, -3.0])  # what padding holds never counts
    assert relation_differences(2 * padded, teacher, mask) == pytest.approx(d)
    # Two samples: a change of basis (swapped coordinates) keeps every relation; moving
    # one sample changes the inter-feature ones: distance sqrt(5) -> 1, cosine 0 -> 1.
    pair = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])
    assert max(relation_differences(pair.flip(-1), pair, torch.ones(2, 1)).values()) == pytest.approx(0.0)
    moved = torch.tensor([[[1.0, 0.0]], [[2.0, 0.0]]])
    d2 = relation_differences(moved, pair, torch.ones(2, 1))
    assert d2["inter_distance"] == pytest.approx(2 * (5**0.5 - 1) / 4)  # off-diagonal pairs of 4 entries
    assert d2["inter_cosine"] == pytest.approx(2 * 1.0 / 4)


def test_minilm_trains_a_student_of_other_width_and_head_count(tmp_path):
    # MiniLM asks nothing of the student's shape: 1 head of width 16 against 2 heads of 32.
    # An intermediate stage with only MiniLM's terms: its training loss is theirs alone.
    study = tiny_study(tmp_path, student={"config": {"layers": 1, "hidden": 16, "heads": 1}})
    study["distillation"] |= {"stages": [{"name": "intermediate", "epochs": 2, "learning_rate": 1e-3}],
                              "beta": 0.0, "gamma": 0.0,
                              "structure": {"minilm_attention": 1.0, "minilm_value": 1.0}}
    losses = []
    run_trial(parse_study(study), report=lambda metrics, _: losses.append(metrics["train_loss"]),
              workdir=tmp_path / "work")
    assert all(math.isfinite(loss) and loss > 0 for loss in losses) and losses[1] < losses[0]
