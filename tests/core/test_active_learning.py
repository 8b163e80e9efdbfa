"""Active learning's arithmetic and scoring: uncertainty measures, k-centre greedy, the strategies, a field scored
against its mirror image, and pools from folders and review projects (issue 19)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_bloodcell.core.active.acquisition import (
    STRATEGIES,
    binary_entropy,
    box_disagreement,
    class_entropy,
    margin_uncertainty,
    percentile_rank,
    probability_disagreement,
    select,
)
from napari_bloodcell.core.active.pool import Pool, PoolField, folder_pool, project_pool
from napari_bloodcell.core.active.suggest import suggest_job
from napari_bloodcell.core.active.scoring import image_descriptor, score_field
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.io.images import png_bytes
from napari_bloodcell.core.progress import drain


def test_uncertainty_measures_run_from_sure_to_coin_toss():
    assert binary_entropy(np.array([0.0, 1.0, 0.5])) == pytest.approx([0, 0, 1], abs=1e-9)
    assert binary_entropy(np.array([0.9])) == pytest.approx(binary_entropy(np.array([0.1])))
    p = np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]])
    assert class_entropy(p) == pytest.approx([0, 1, np.log(2) / np.log(3)], abs=1e-6)
    assert margin_uncertainty(p) == pytest.approx([0, 1, 1])
    q = np.array([[0, 1, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]])
    assert probability_disagreement(p, q) == pytest.approx([1, 0, 0])
    assert percentile_rank(np.array([3.0, 1.0, 2.0, 2.0])) == pytest.approx([1, 0.25, 0.75, 0.75])


def test_box_disagreement_counts_boxes_the_mirror_does_not_confirm():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    assert box_disagreement(a, [0, 1], a, [0, 1]) == 0.0
    assert box_disagreement(a, [0, 1], a, [0, 0]) == pytest.approx(0.5)  # the second box changes class
    assert box_disagreement(a, [0, 1], a[:1], [0]) == pytest.approx(1 - 2 / 3)  # one box vanishes
    assert box_disagreement(a, [0, 1], a + 50, [0, 1]) == 1.0
    assert box_disagreement(np.zeros((0, 4)), [], np.zeros((0, 4)), []) == 0.0


def clusters(rng, sizes):
    """Embeddings in tight clusters around random directions, cluster by cluster."""
    centres = rng.normal(size=(len(sizes), 16))
    return np.concatenate([c + 0.01 * rng.normal(size=(n, 16)) for c, n in zip(centres, sizes)])


def test_diversity_takes_one_of_each_near_identical_group():
    rng = np.random.default_rng(0)
    emb = clusters(rng, [10, 1, 1, 1, 1])  # ten near-identical fields and four others
    picked = select("diversity", 5, embeddings=emb).order
    groups = [0 if i < 10 else i for i in picked]
    assert len(set(groups)) == 5
    assert select("uncertainty", 5, uncertainty=np.r_[np.linspace(0.9, 1, 10), np.zeros(4)]).order == \
        list(range(9, 4, -1))  # uncertainty alone takes five of the ten alike


def test_reviewed_fields_anchor_diversity_and_combined():
    rng = np.random.default_rng(1)
    emb = clusters(rng, [5, 5])
    # group 0 is already reviewed: the first picks come from group 1
    assert select("diversity", 1, embeddings=emb, reviewed=emb[:2]).order[0] >= 5
    unc = np.r_[np.full(5, 0.9), np.full(5, 0.5)]
    first = select("combined", 2, uncertainty=unc, embeddings=emb, reviewed=emb[:1]).order
    assert first[0] >= 5  # unlike what was reviewed beats a little more uncertain than it
    # with nothing reviewed the most uncertain comes first, then the other group
    order = select("combined", 2, uncertainty=unc, embeddings=emb).order
    assert order[0] < 5 and order[1] >= 5


def test_random_is_a_reproducible_draw():
    a = select("random", 4, uncertainty=np.zeros(20), seed=3).order
    assert a == select("random", 4, uncertainty=np.zeros(20), seed=3).order
    assert a != select("random", 4, uncertainty=np.zeros(20), seed=4).order
    with pytest.raises(BloodcellInputError, match="seed must be 0 or more"):
        select("random", 4, uncertainty=np.zeros(20), seed=-1)


def test_items_with_broken_numbers_come_last_and_spoil_nothing():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(6, 8))
    emb[2] = np.nan  # say, an fp16 overflow
    unc = rng.random(6)
    unc[4] = np.nan
    for strategy in ("combined", "diversity"):
        sel = select(strategy, 6, uncertainty=unc, embeddings=emb)
        assert sel.order[-1] == 2 and all(np.isfinite(sel.score))
        assert sorted(sel.order) == list(range(6))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 40), st.sampled_from(STRATEGIES), st.integers(0, 5))
def test_any_strategy_picks_distinct_items_in_range(n, k, strategy, seed):
    rng = np.random.default_rng(seed)
    sel = select(strategy, k, uncertainty=rng.random(n), embeddings=rng.normal(size=(n, 4)),
                 reviewed=rng.normal(size=(seed, 4)) if seed else None, seed=seed)
    assert len(sel.order) == min(k, n) == len(set(sel.order)) == len(sel.score)
    assert all(0 <= i < n for i in sel.order)
    assert all(0.0 <= s <= 1.0 + 1e-9 for s in sel.score)


def test_bad_requests_are_one_line_errors():
    with pytest.raises(BloodcellInputError, match="unknown strategy"):
        select("cleverest", 2, uncertainty=[0.1])
    with pytest.raises(BloodcellInputError, match="k must be"):
        select("uncertainty", 0, uncertainty=[0.1])
    with pytest.raises(BloodcellInputError, match="needs the items' embeddings"):
        select("diversity", 1, uncertainty=[0.1])
    with pytest.raises(BloodcellInputError, match="the pool's have 4 features"):
        select("diversity", 1, embeddings=np.ones((3, 4)), reviewed=np.ones((2, 5)))


class MirrorPredictor:
    """Finds one box at the left edge: the same cell in the mirror image only if ``consistent``."""

    classes = ["WBC"]
    model_id = label = "fake"
    native_size = None
    batch_size = 1

    def __init__(self, consistent: bool) -> None:
        self.consistent = consistent
        self.calls = 0

    def predict(self, tiles, score, nms_iou):
        self.calls += 1
        w = tiles[0].shape[1]
        box = [0, 0, 10, 10] if self.calls % 2 or not self.consistent else [w - 10, 0, w, 10]
        return [(np.array([box], float), np.array([0]), np.array([0.6]))]


def test_a_field_the_mirror_contradicts_is_less_certain():
    image = np.zeros((40, 60, 3), np.uint8)
    sure = score_field(MirrorPredictor(consistent=True), image)
    unsure = score_field(MirrorPredictor(consistent=False), image)
    assert sure.disagreement == 0.0 and unsure.disagreement == 1.0
    assert sure.entropy == unsure.entropy == pytest.approx(binary_entropy(np.array([0.6]))[0])
    assert unsure.uncertainty > sure.uncertainty
    assert sure.cells == 1 and sure.embedding.shape == (48,)  # no backbone: the image descriptor


def test_the_detector_backbone_describes_a_field(sample_data):
    from napari_bloodcell.core.inference.detect import load_predictor
    from napari_bloodcell.core.io.images import read_image

    predictor = load_predictor("bundled", "cpu")
    image = read_image(sorted((sample_data / "smear" / "JPEGImages").iterdir())[0])[:256, :256]
    s = score_field(predictor, image)
    assert s.embedding.shape == (1024,) and np.isfinite(s.embedding).all()  # YOLOv3-tiny's stride-32 map
    assert 0 <= s.uncertainty <= 1 and s.cells > 0


def write_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = np.full((48, 64, 3), 40 * i % 255, np.uint8) + rng.integers(0, 30, (48, 64, 3), dtype=np.uint8)
        paths.append(folder / f"f{i}.png")
        paths[-1].write_bytes(png_bytes(img))
    return paths


def test_a_folder_pool_is_ranked_with_the_classical_detector(tmp_path):
    write_images(tmp_path / "pool", 4)
    (tmp_path / "pool" / "notes.txt").write_text("not an image")
    pool = folder_pool(tmp_path / "pool")
    assert [f.name for f in pool.fields] == ["f0.png", "f1.png", "f2.png", "f3.png"]
    steps = []
    result = drain(suggest_job(pool, "classical", k=3, strategy="combined"), steps.append)
    assert [s.rank for s in result.items] == [1, 2, 3] and len({s.name for s in result.items}) == 3
    assert result.unit == "field" and steps[-1].step == steps[-1].total == 4
    assert result.as_json()["suggestions"][0]["name"] == result.items[0].name


def test_a_project_pool_leaves_done_fields_out_and_anchors_on_them(tmp_path):
    from napari_bloodcell.core.annotations import AnnotationTable
    from napari_bloodcell.core.review_project import ReviewProject, image_digest, image_key

    project = ReviewProject(tmp_path / "project")
    paths = write_images(tmp_path / "slide", 3)
    for k, path in enumerate(paths):
        table = AnnotationTable(["WBC", "RBC"])
        table.add(np.array([[2, 2, 20, 20]], float), [0], "model", scores=[0.9])
        if k == 0:
            table.set_review(table.ids, "accepted", by="me")
            table.sign("me")
        digest = image_digest(path)
        project.save(image_key(path.name, digest), table, {"file_name": path.name, "width": 64, "height": 48,
                                                            "path": str(path) if k < 2 else "/gone/f2.png",
                                                            "digest": digest})
    pool = project_pool(project)
    assert [f.name for f in pool.fields] == ["f1.png", "f2.png"]
    assert [f.name for f in pool.reviewed] == ["f0.png"]
    result = drain(suggest_job(pool, "classical", k=5, strategy="diversity"))
    assert [s.name for s in result.items] == ["f1.png"] and result.reviewed == 1
    assert len(result.skipped) == 1 and "f2.png" in result.skipped[0] and "/gone/f2.png" in result.skipped[0]
    from napari_bloodcell.core.cases import Case

    Case.create(project, "slide", by="me").add_images(paths[1:2])  # a case of f1 alone
    case_pool = project_pool(project, case="slide")
    assert [f.name for f in case_pool.fields] == ["f1.png"] and not case_pool.reviewed


def test_an_empty_pool_and_a_missing_model_say_so(tmp_path):
    with pytest.raises(BloodcellInputError, match="no field left"):
        drain(suggest_job(Pool([], [], str(tmp_path)), "classical"))
    with pytest.raises(BloodcellInputError, match="no such model file"):
        drain(suggest_job(Pool([PoolField("a", (str(tmp_path / "a.png"),))], [], "x"), tmp_path / "none.pt"))


def test_unreadable_moved_or_changed_fields_are_skipped_and_named(tmp_path):
    from napari_bloodcell.core.review_project import image_digest

    paths = write_images(tmp_path / "pool", 3)
    (tmp_path / "pool" / "broken.png").write_bytes(png_bytes(np.zeros((4, 4, 3), np.uint8))[:30])
    grey = tmp_path / "pool" / "grey16.png"
    grey.write_bytes(png_bytes((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)))
    moved = PoolField("moved.png", (str(tmp_path / "gone.png"),), "k1", image_digest(paths[0]))
    changed = PoolField("changed.png", (str(paths[1]),), "k2", image_digest(paths[2]))
    pool = Pool([PoolField(p.name, (str(p),)) for p in (*paths, grey, tmp_path / "pool" / "broken.png")]
                + [moved, changed], [PoolField("anchor", (str(grey),))], "pool")
    result = drain(suggest_job(pool, "classical", k=10, strategy="combined"))
    assert {s.name for s in result.items} == {"f0.png", "f1.png", "f2.png", "grey16.png"}
    assert result.reviewed == 1  # a 16-bit greyscale anchor is described like any field
    text = " | ".join(result.skipped)
    assert "broken.png" in text and "moved.png" in text and "changed since it was reviewed" in text
    drawn = drain(suggest_job(pool, "classical", k=10, strategy="random"))  # no model pass, images still checked
    assert "moved.png" not in {s.name for s in drawn.items} and "changed.png" not in {s.name for s in drawn.items}
    assert all(Path(s.path).is_file() for s in drawn.items) and [s.rank for s in drawn.items] == [1, 2, 3, 4, 5]


def test_a_classifier_ranks_only_the_cells_it_types_with_their_own_ids(sample_data, tmp_path):
    import torch

    from napari_bloodcell.core.crops import cell_crops
    from napari_bloodcell.core.inference.classify import FORMAT, load_classifier
    from napari_bloodcell.core.io.formats import read_annotations
    from napari_bloodcell.core.io.images import read_image
    from napari_bloodcell.core.models.checkpoints import save_checkpoint
    from napari_bloodcell.core.models.classifiers import build_classifier
    from napari_bloodcell.core.active.scoring import score_cells

    torch.manual_seed(0)
    types = ["Neutrophil", "Lymphocyte"]
    model = build_classifier("darknet_tiny", types, input_size=32)
    ckpt = tmp_path / "wbc.pt"
    save_checkpoint({"format": FORMAT, "arch": model.arch, "arch_args": {"input_size": 32}, "classes": types,
                     "model": {k: v.detach() for k, v in model.state_dict().items()}}, ckpt)
    smear = sample_data / "smear"
    boxes = read_annotations(smear / "annotations.json")
    pool = folder_pool(smear / "JPEGImages", boxes)
    result = drain(suggest_job(pool, ckpt, k=4, strategy="uncertainty"))
    by_name = {Path(r.file_name).name: r for r in boxes.images}
    assert result.unit == "cell" and result.pool == sum(
        int(np.isin(np.array(boxes.classes)[r.labels], types).sum()) for r in boxes.images)
    for s in result.items:  # the id names the very cell that was scored
        rec = by_name[s.name]
        assert boxes.classes[int(rec.labels[s.cell_id])] in types
        crop = cell_crops(read_image(rec.path), rec.boxes[[s.cell_id]], load_classifier(ckpt, "cpu").context)
        direct = drain(score_cells(load_classifier(ckpt, "cpu"), crop))
        assert direct.uncertainty[0] == pytest.approx(s.uncertainty, abs=1e-4)
    assert [s.uncertainty for s in result.items] == sorted([s.uncertainty for s in result.items], reverse=True)


def test_the_image_descriptor_tells_stains_apart():
    pink = np.zeros((32, 32, 3), np.uint8) + np.array([230, 150, 180], np.uint8)
    blue = np.zeros((32, 32, 3), np.uint8) + np.array([120, 130, 220], np.uint8)
    assert np.linalg.norm(image_descriptor(pink) - image_descriptor(blue)) > 0.1
    assert image_descriptor(np.zeros((1, 7), np.uint8)).shape == (48,)  # a one-pixel-high strip is no crash
