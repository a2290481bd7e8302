"""Tasks: the shipped eight load with their splits; user CSVs become tasks or are refused by name."""

import numpy as np
import pytest

from evolve.tasks import TaskError, create_task_folder, load_task, shipped_task_names, validation_mask

EXPECTED_ROWS = {  # train / test rows from shared/sldbench/SOURCES.md
    "data_constrained_scaling_law": (161, 21),
    "domain_mixture_scaling_law": (80, 24),
    "easy_question_scaling_law": (389, 127),
    "lr_bsz_scaling_law": (2702, 117),
    "moe_scaling_law": (193, 28),
    "parallel_scaling_law": (36, 12),
    "sft_scaling_law": (504, 42),
    "vocab_scaling_law": (1080, 120),
}


def test_all_eight_tasks_ship_with_official_row_counts():
    assert shipped_task_names() == sorted(EXPECTED_ROWS)
    for name, (train, test) in EXPECTED_ROWS.items():
        task = load_task(name)
        assert (len(task.train), len(task.test)) == (train, test)
        assert task.description and task.features and task.targets


def test_validation_holds_out_each_groups_largest_rows():
    task = load_task("sft_scaling_law")
    fit, held = task.fit_and_score_rows("validation")
    assert len(fit) + len(held) == len(task.train)
    for group in task.train.group_names():
        fit_x = fit.X[fit.groups == group, 0]
        held_x = held.X[held.groups == group, 0]
        assert len(held_x) >= 1 and held_x.min() > fit_x.max()


def test_validation_never_touches_test_rows():
    task = load_task("moe_scaling_law")
    fit, held = task.fit_and_score_rows("validation")
    test_rows = {tuple(r) for r in np.c_[task.test.X, task.test.y]}
    assert not any(tuple(r) in test_rows for r in np.c_[held.X, held.y])


def test_random_validation_is_seeded():
    a, b = (load_task("domain_mixture_scaling_law") for _ in range(2))
    a = validation_mask(a.train, a.features, a.validation)
    b = validation_mask(b.train, b.features, b.validation)
    assert a.any() and (a == b).all()


def test_random_validation_holds_out_replicates_together():
    # 12 configurations run 3 times each: a random cut must hold out whole configurations
    # (a law fitted on one replicate has seen its siblings' observation), ~20% of them.
    from evolve.tasks import Rows, ValidationRule

    X = np.repeat(np.arange(1.0, 13.0), 3)[:, None]
    rows = Rows(X, np.arange(36.0), np.array(["g"] * 36))
    mask = validation_mask(rows, ("x",), ValidationRule("", 0.2, 1))
    held = set(X[mask, 0].tolist())
    assert len(held) == 3 and mask.sum() == 9  # ceil(0.2 * 12) configurations, all their rows
    assert not held & set(X[~mask, 0].tolist())


def test_unknown_task_is_one_line_error():
    with pytest.raises(TaskError, match="unknown task 'nope'") as info:
        load_task("nope")
    assert "\n" not in str(info.value)


def write_csv(path, text):
    path.write_text(text)
    return path


def test_tasks_new_writes_a_loadable_task(tmp_path):
    rows = "\n".join(f"{'a' if i % 2 else 'b'},{10 * (i + 1)},{5 + 1 / (i + 1)}" for i in range(20))
    csv_path = write_csv(tmp_path / "mine.csv", "g,n,loss\n" + rows + "\n")
    task = create_task_folder(tmp_path / "mytask", csv_path, ["n"], ["loss"], group_column="g", test_column="n", test_fraction=0.2)
    assert task.train.group_names() == ["a", "b"]
    assert len(task.test) == 4 and task.test.X[:, 0].min() > 150
    assert load_task(tmp_path / "mytask").name == "mytask"


@pytest.mark.parametrize(
    "content, message",
    [
        ("n,other\n1,2\n", "no target column 'loss' \\(has 'n', 'other'\\)"),
        ("n,loss\n1,2\nx,3\n", "line 3: column 'n' is not a number: 'x'"),
        ("n,loss\n1,2\n2,nan\n", "line 3: column 'loss' is 'nan'"),
        ("n,loss\n", "no data rows"),
    ],
)
def test_malformed_csv_is_refused_naming_column_and_row(tmp_path, content, message):
    csv_path = write_csv(tmp_path / "bad.csv", content)
    with pytest.raises(TaskError, match=message):
        create_task_folder(tmp_path / "t", csv_path, ["n"], ["loss"])
    assert not (tmp_path / "t").exists()


def test_empty_group_is_refused(tmp_path):
    csv_path = write_csv(tmp_path / "bad.csv", "g,n,loss\na,1,2\n,2,3\n")
    with pytest.raises(TaskError, match="line 3: empty group"):
        create_task_folder(tmp_path / "t", csv_path, ["n"], ["loss"], group_column="g")


def test_broken_task_toml_is_refused(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "task.toml").write_text("features = [\n")
    with pytest.raises(TaskError, match="not valid TOML"):
        load_task(folder)


def test_second_validation_fold_holds_out_the_next_scales_below_the_first():
    task = load_task("data_constrained_scaling_law")
    assert task.validation.folds == 2
    (fit1, held1), (fit2, held2) = task.validation_folds()
    assert len(fit1) + len(held1) == len(task.train)
    assert len(fit2) + len(held2) == len(fit1)
    tokens = task.features.index("tokens")
    assert held2.X[:, tokens].min() > fit2.X[:, tokens].max()
    assert held2.X[:, tokens].max() <= held1.X[:, tokens].min()
    assert task.fit_and_score_rows("validation")[1].X.shape == held1.X.shape
    assert task.summary()["validation_folds"] == 2


def test_tasks_without_folds_keep_one_validation_fold():
    task = load_task("parallel_scaling_law")
    assert len(task.folds("validation")) == 1 and len(task.folds("test")) == 1


@pytest.mark.parametrize("folds", ["0", "6", "1.5", '"two"', "true"])
def test_bad_fold_count_is_refused(tmp_path, folds):
    folder = tmp_path / "t"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"{split}.csv").write_text("group,n,loss\na,1,2\na,2,1\na,3,0.5\n")
    (folder / "task.toml").write_text(f'features = ["n"]\ntargets = ["loss"]\n[validation]\ncolumn = "n"\nfolds = {folds}\n')
    with pytest.raises(TaskError, match="folds must be a whole number from 1 to 5"):
        load_task(folder)


def test_random_validation_folds_are_disjoint_and_fold_two_fits_inside_fold_one():
    import dataclasses

    task = load_task("domain_mixture_scaling_law")
    two = dataclasses.replace(task, validation=dataclasses.replace(task.validation, folds=2))
    (fit1, held1), (fit2, held2) = two.validation_folds()

    def keys(rows):  # a row is its group, mixture and losses (mixtures repeat across groups)
        return {(g, *x, *y) for g, x, y in zip(rows.groups, rows.X.tolist(), rows.y.tolist())}

    assert len(keys(task.train)) == len(task.train)
    assert keys(held1) & keys(held2) == set() and len(held2) > 0
    assert keys(fit2) | keys(held2) == keys(fit1) and keys(fit1) | keys(held1) == keys(task.train)
    assert two.fit_and_score_rows("validation")[1].X.tolist() == task.fit_and_score_rows("validation")[1].X.tolist()


def test_a_cut_keeps_values_equal_but_for_float_rounding_together():
    """A new user's `--test-largest params*tokens`: one FLOP budget's nine points differed
    only in the last bit (5.3333333333333331e17 against ...338e17), and four went to train,
    five to test. Values within 1e-9 of the cut are ties."""
    import numpy as np

    from evolve.tasks import largest_mask

    budget = np.array([5.3333333333333331e17, 5.3333333333333338e17] * 4 + [5.3333333333333331e17])
    values = np.concatenate([np.geomspace(1e15, 1e17, 11), budget])
    mask = largest_mask(np.array(["g"] * len(values)), values, 0.2)
    assert mask[11:].all() and not mask[:11].any()
