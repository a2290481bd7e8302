"""The law a run returns (evolve.selection): simpler laws within noise, no cancelling
coefficients, a default cap from rows per group, and choices made from train alone."""

import dataclasses

import numpy as np

from evolve.metrics import Metrics
from evolve.propose.grammar import default_param_cap, task_context
from evolve.records import ProgramRecord
from evolve.scoring.in_sandbox import RunReport
from evolve.scoring.scorer import Evaluation
from evolve.selection import cancelling, choose, gap_and_noise, one_se_choice, ordered_top
from evolve.status import Status
from evolve.tasks import create_task_folder, load_task


def truth(x):
    return 2.0 + 5.0 * x ** -0.5


def make_task(tmp_path, param_cap=None, validation=(0.25, 2), rows=60, name="synthetic"):
    rng = np.random.default_rng(0)
    x = np.geomspace(10, 1e5, rows)
    y = truth(x) + rng.normal(0, 0.02, rows)
    csv = tmp_path / f"{name}.csv"
    csv.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y)))
    return create_task_folder(tmp_path / name, csv, ["x"], ["y"], test_column="x", test_fraction=0.2,
                              param_cap=param_cap, validation=validation)


def record(ident, r2, n_params, params=None):
    metrics = Metrics(r2, 1 - r2, 0.0, 1 / (2 - r2), (r2,), (1 - r2,), (0.0,))
    evaluation = Evaluation(Status.OK, "validation", metrics, params={"all_data": params or [1.0] * n_params}, n_params=n_params)
    return ProgramRecord(code=f"def law_{ident}():\n    return {ident}\n", validation=evaluation, id=ident, proposer="offline")


def wobble(x, y):
    """Better than the true law on these held-out rows on average, by less than the row-to-row
    spread of the gain (it moves toward some labels and away from others)."""
    return truth(x) + (y - truth(x)) * np.where(np.cos(9 * np.log(x)) > 0, 0.5, -0.3)


def fake_run(task, laws):
    """A stand-in for Scorer.run: law ident -> predictions from (x, y of that row)."""
    labels = {float(x): float(y) for x, y in zip(task.train.X[:, 0], task.train.y[:, 0])}

    def run(code, jobs, task_):
        ident = int(code.split("return ")[1])
        predictions = {}
        for job in jobs:
            x = job.X_predict[:, 0]
            y = np.array([labels.get(float(v), float(truth(v))) for v in x])  # beyond the data (evolve.extrapolation): the truth
            predictions[job.group] = laws[ident](x, y).reshape(-1, 1)
        return RunReport(Status.OK, "", predictions, {})
    return run


def test_cancelling_coefficients_are_detected_from_fitted_params():
    assert cancelling({"g": [-56302.5, 56304.8, 0.31, 1.2]}, 3.0)
    assert not cancelling({"g": [400.0, 0.3, 1.7]}, 3.0)  # one large scale constant is fine
    assert not cancelling({"g": [5e4, 3e4, 0.3]}, 3.0)  # same sign: no cancellation
    assert not cancelling({"g": [-20.0, 25.0, 0.3]}, 3.0)  # opposite signs but not huge
    assert not cancelling({"g": [-9e3, 4e3, 0.3]}, 3.0)  # huge, opposite, but not summing to little (a U-shape)


def test_cancelling_law_loses_to_the_simple_law(tmp_path):
    task = make_task(tmp_path)
    laws = {1: lambda x, y: truth(x), 2: wobble}  # 2: a little better on validation, within noise
    simple = record(1, 0.95, 3, [2.0, 5.0, 0.5])
    cancel = record(2, 0.951, 5, [-56302.5, 56304.8, 0.5, 0.1, 0.2])
    choice = choose([cancel, simple], task, fake_run(task, laws))
    assert choice.record.id == 1 and 2 in choice.refused and "warning" not in choice.reason


def test_cancelling_law_is_kept_when_far_better(tmp_path):
    task = make_task(tmp_path)
    laws = {1: lambda x, y: truth(x) + 0.5, 2: lambda x, y: truth(x)}
    choice = choose([record(2, 0.9, 4, [-5e4, 5e4, 0.5, 0.1]), record(1, 0.2, 3)], task, fake_run(task, laws))
    assert choice.record.id == 2
    # and the reason says what it is (a new-user trial got such a law with no word of it)
    assert "warning: the chosen law has coefficients that cancel" in choice.reason and "check how it extrapolates" in choice.reason


def test_one_standard_error_rule_takes_the_smaller_law_within_noise(tmp_path):
    task = make_task(tmp_path, param_cap=10)
    laws = {1: lambda x, y: truth(x), 2: wobble}
    big, small = record(2, 0.96, 8), record(1, 0.95, 3)
    choice = choose([big, small], task, fake_run(task, laws))
    assert choice.record.id == 1 and set(choice.within_noise) == {1, 2}
    assert [r.id for r in ordered_top([big, small], choice, 5)] == [1, 2]


def test_one_standard_error_rule_keeps_the_better_law_beyond_noise(tmp_path):
    task = make_task(tmp_path, param_cap=10)
    laws = {1: lambda x, y: truth(x) + 0.3, 2: lambda x, y: truth(x)}
    choice = choose([record(2, 0.96, 8), record(1, 0.5, 3)], task, fake_run(task, laws))
    assert choice.record.id == 2


def test_one_se_choice_on_errors():
    rng = np.random.default_rng(1)
    base = rng.exponential(1.0, 50)
    a, b = record(1, 0.9, 7), record(2, 0.9, 3)
    chosen, within = one_se_choice([(a, base, np.array([base.mean()])), (b, base + rng.normal(0.01, 0.5, 50), np.array([base.mean() + 0.01]))])
    assert chosen.id == 2 and set(within) == {1, 2}
    chosen, _ = one_se_choice([(a, base, np.array([base.mean()])), (b, base + 2.0, np.array([base.mean() + 2.0]))])
    assert chosen.id == 1



def test_a_copy_that_differs_by_solver_rounding_is_within_noise():
    # A 5-parameter law whose extra term the fit set to nothing and its 3-parameter form: errors
    # equal but for rounding (1e-9 relative, paired spread smaller still). The rounding is no
    # evidence, so the fewer-parameter copy is within one standard error and is returned.
    rng = np.random.default_rng(2)
    base = rng.exponential(1.0, 40)
    copy = base + 1e-9 * base.mean() * (1 + 0.1 * rng.random(40))
    full, short, other = record(1, 0.9, 5), record(2, 0.9, 3), record(3, 0.89, 3)
    worse = base + 0.01 + rng.normal(0, 0.02, 40)
    chosen, within = one_se_choice([(full, base, np.array([base.mean()])), (short, copy, np.array([copy.mean()])),
                                    (other, worse, np.array([worse.mean()]))])
    assert chosen.id == 2 and {1, 2} <= set(within)
    assert gap_and_noise((short, copy, np.array([copy.mean()])), (full, base, np.array([base.mean()])))[1] >= 1e-6 * base.mean()

def test_replicate_rows_count_once_toward_the_standard_error():
    # Three runs of each configuration (identical inputs and, here, identical labels) are one
    # observation of a law's error there, not three: the gap's standard error must not shrink
    # by sqrt(3) because each row was repeated, and its mean must not move.
    from evolve.selection import fold_row_errors
    from evolve.tasks import Rows

    rng = np.random.default_rng(3)
    truth_rows = [rng.normal(0, 1, 30), rng.normal(0, 1, 20)]
    law_a = [t + rng.normal(0, 0.3, len(t)) for t in truth_rows]
    law_b = [t + rng.normal(0.1, 0.3, len(t)) for t in truth_rows]
    inputs = [np.arange(len(t), dtype=float)[:, None] for t in truth_rows]

    def errors(predictions, repeat):
        rows = [Rows(np.repeat(x, repeat, axis=0), np.repeat(t, repeat), np.array(["g"] * (repeat * len(t))))
                for x, t in zip(inputs, truth_rows)]
        labels = [r.replicate_labels() for r in rows]
        return fold_row_errors([np.repeat(p, repeat) for p in predictions], [r.y for r in rows], labels)

    once = [errors(law, 1) for law in (law_a, law_b)]
    thrice = [errors(law, 3) for law in (law_a, law_b)]
    for (rows1, folds1), (rows3, folds3) in zip(once, thrice):
        assert np.allclose(rows1, rows3) and np.allclose(folds1, folds3)
    gap1, se1 = gap_and_noise((None, *once[1]), (None, *once[0]))
    gap3, se3 = gap_and_noise((None, *thrice[1]), (None, *thrice[0]))
    assert np.isclose(gap1, gap3) and np.isclose(se1, se3)
    # without the labels the repeated rows would read as three times the evidence
    naive = fold_row_errors([np.repeat(p, 3) for p in law_b], [np.repeat(t, 3) for t in truth_rows])
    naive_a = fold_row_errors([np.repeat(p, 3) for p in law_a], [np.repeat(t, 3) for t in truth_rows])
    assert gap_and_noise((None, *naive), (None, *naive_a))[1] < 0.65 * se1
    # distinct inputs: the labels change nothing
    distinct = fold_row_errors(law_b, truth_rows, [np.arange(len(t)) for t in truth_rows])
    assert np.allclose(distinct[0], fold_row_errors(law_b, truth_rows)[0])


def test_one_replicate_set_is_no_evidence_and_the_seed_stands():
    # One fold whose held-out rows are four runs of one configuration: one observation, no
    # spread to measure. A law 0.01 closer to the runs' mean must not beat the seed by
    # "50,000 standard errors" (the noise had collapsed to the precision floor).
    from evolve.selection import fold_row_errors, seed_standing
    from evolve.tasks import Rows

    truth = np.array([1.0, 1.3, 0.8, 1.1])
    labels = [Rows(np.ones((4, 2)), truth, np.array(["g"] * 4)).replicate_labels()]
    assert list(labels[0]) == [0, 0, 0, 0]
    seed_errors = fold_row_errors([np.full(4, 1.2)], [truth], labels)
    law_errors = fold_row_errors([np.full(4, 1.19)], [truth], labels)
    gap, noise = gap_and_noise((None, *seed_errors), (None, *law_errors))
    assert gap > 0 and noise == float("inf")
    seed = (seeded(1, 0.5, 2), *seed_errors)
    law = (record(2, 0.5, 2), *law_errors)
    standing, beating, _ = seed_standing([seed, law], [seed, law], tried=10)
    assert standing is seed[0] and beating == []


def test_replicate_labels_of_no_rows_are_empty():
    from evolve.table import replicate_labels

    assert replicate_labels(np.zeros((0, 2))).shape == (0,)
    assert replicate_labels(np.zeros(0)).shape == (0,)


def test_default_cap_for_uncapped_tasks_comes_from_rows_per_group(tmp_path):
    task = make_task(tmp_path, param_cap=None, rows=60)
    fit_rows = task.validation_folds()[-1][0]
    assert default_param_cap(task) == max(3, len(fit_rows) // 4)
    assert task_context(task).max_params == 20  # the search is not capped by it; selection reads it
    capped = make_task(tmp_path, param_cap=6, name="capped")
    assert task_context(capped).max_params == 6


def test_choices_are_made_from_train_alone(tmp_path):
    """Changing test.csv changes neither the automatic validation rule nor the law chosen."""
    task = make_task(tmp_path, validation=None)
    laws = {1: lambda x, y: truth(x), 2: wobble}
    records = [record(2, 0.96, 8), record(1, 0.95, 3)]
    before = (task.validation, choose(records, task, fake_run(task, laws)).record.id)
    lines = (task.path / "test.csv").read_text().splitlines()
    (task.path / "test.csv").write_text("\n".join([lines[0]] + [",".join(l.split(",")[:2] + ["-99.0"]) for l in lines[1:3]]) + "\n")
    changed = load_task(task.path)
    assert len(changed.test) == 2 and changed.test.y[0, 0] == -99.0
    assert (changed.validation, choose(records, changed, fake_run(changed, laws)).record.id) == before


def test_auto_rule_holds_out_half_the_scales_of_a_few_scale_sweep():
    from evolve.tasks import Rows, auto_validation_rule, validation_mask

    sizes = np.repeat([1e7, 3e7, 1e8, 3e8, 1e9], 8)
    X = np.column_stack([sizes, np.tile(np.arange(1.0, 9.0), 5)])
    train = Rows(X, np.ones((len(X), 1)), np.array(["g"] * len(X), dtype=object))
    rule = auto_validation_rule(train, ("n", "k"), "n", 0.15)
    held = validation_mask(train, ("n", "k"), rule)
    assert sorted(set(sizes[held])) == [1e8, 3e8, 1e9] and rule.folds == 1
    no_scale = Rows(np.random.default_rng(0).uniform(0.2, 1, (40, 2)), np.ones((40, 1)), np.array(["g"] * 40, dtype=object))
    assert auto_validation_rule(no_scale, ("a", "b"), "", 0.2).column == ""  # no axis: a random cut


def seeded(ident, r2, n_params):
    return dataclasses.replace(record(ident, r2, n_params), proposer="seed")


def distinct_noise(i):
    """A law of its own: errs on its own rows (a fixed random perturbation per law)."""
    bumps = np.random.default_rng(1000 + i).normal(0, 0.08, 4096)
    return lambda x, y: truth(x) + 1.0 + bumps[(np.log(x) * 97).astype(int) % 4096]


def test_a_seed_that_stands_with_cancelling_coefficients_is_not_called_refused_nor_kept_on_evidence(tmp_path):
    # a new-user trial: 7 rows, the generic power-law seed fitted on 5 of them cancels; it stood as the seed, and the
    # reason said both that it was among the finalists refused and that it beat every clean law by two standard errors
    task = make_task(tmp_path, param_cap=10)
    laws = {1: lambda x, y: truth(x), 2: lambda x, y: truth(x) + 0.05}
    seed = seeded(1, 0.9, 3)
    seed = dataclasses.replace(seed, validation=dataclasses.replace(seed.validation, params={"all_data": [-5e4, 5e4, 0.5]}))
    choice = choose([seed, record(2, 0.8, 3)], task, fake_run(task, laws))
    assert choice.record.id == 1 and 1 not in choice.refused and "refused" not in choice.reason
    assert "kept because it is the seed law and no law beat it by the margin" in choice.reason
    assert "two standard errors" not in choice.reason


def test_the_seed_stands_unless_the_search_beats_it_beyond_luck(tmp_path):
    from evolve.selection import search_margin

    task = make_task(tmp_path, param_cap=10)
    seed = seeded(1, 0.9, 3)
    # 2 beats the seed by about 3 standard errors: beyond the margin for 2 laws tried, not for 300 distinct ones
    laws = {1: lambda x, y: truth(x), 2: lambda x, y: truth(x) + (y - truth(x)) * np.where(np.cos(9 * np.log(x)) > 0, 0.8, 0.2)}
    assert choose([record(2, 0.97, 5), seed], task, fake_run(task, laws)).record.id == 2  # 2 laws tried: small margin
    many = [record(2, 0.97, 5), seed] + [record(i, 0.1, 4) for i in range(3, 300)]
    laws.update({i: distinct_noise(i) for i in range(3, 300)})  # 297 laws, each erring on rows of its own
    assert search_margin(300) > 3 and choose(many, task, fake_run(task, laws)).record.id == 1
    laws[1] = lambda x, y: truth(x) + 0.05  # a seed off by a bias: a law far better displaces it whatever was tried
    assert choose(many, task, fake_run(task, laws)).record.id == 2


def test_near_copies_are_not_counted_as_independent_chances_of_luck(tmp_path):
    """The same gain among 300 tried programs that are near-copies of one poor law (they
    predict alike row by row) displaces the seed: they are a few distinct laws, not 300."""
    task = make_task(tmp_path, param_cap=10)
    laws = {1: lambda x, y: truth(x), 2: lambda x, y: truth(x) + (y - truth(x)) * np.where(np.cos(9 * np.log(x)) > 0, 0.8, 0.2)}
    laws.update({i: (lambda x, y: truth(x) + 1.0) for i in range(3, 300)})
    many = [record(2, 0.97, 5), seeded(1, 0.9, 3)] + [record(i, 0.1, 4) for i in range(3, 300)]
    choice = choose(many, task, fake_run(task, laws))
    assert choice.record.id == 2 and "of 299 tried" in choice.reason


def test_effective_number_of_laws_from_their_gains():
    from evolve.selection import effective_laws

    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (200, 1))
    copies = base + rng.normal(0, 1e-3, (200, 10))  # ten reparametrisations of one law
    assert effective_laws(copies) < 1.5
    assert effective_laws(rng.normal(0, 1, (200, 10))) > 7  # ten laws erring on different rows
    two = np.column_stack([copies, rng.normal(0, 1, (200, 1))])
    assert 1.5 < effective_laws(two) < 3
    assert effective_laws(np.ones((50, 4))) == 1.0  # no spread: one comparison


def test_a_law_that_beats_the_seed_is_returned_over_a_simpler_one_that_does_not(tmp_path):
    """The one-standard-error rule picks among the laws that beat the seed beyond the margin:
    a simpler law within noise of the best but not clearly better than the seed does not hand
    the run back to the seed."""
    task = make_task(tmp_path, param_cap=10)
    laws = {1: lambda x, y: truth(x) + 0.3,  # the seed: biased
            2: lambda x, y: truth(x),  # far better than the seed
            3: lambda x, y: truth(x) + 0.3 - 0.3 * np.where(np.cos(9 * np.log(x)) > 0, 1.6, 0.0)}  # simpler, noisy
    records = [record(2, 0.97, 8), record(3, 0.9, 4), seeded(1, 0.5, 3)]
    choice = choose(records, task, fake_run(task, laws))
    assert choice.record.id == 2 and "beats the seed" in choice.reason
    assert "lowest error on the selection folds (not the search's validation R²)" in choice.reason  # a trial read "best validation error" against val R²


def test_selection_folds_add_evidence_only_where_train_allows(tmp_path):
    from evolve.selection import selection_folds

    task = make_task(tmp_path, param_cap=10, validation=(0.2, 1), rows=60)
    folds = selection_folds(task)
    assert len(folds) > 1 and folds[0][1].X.tolist() == task.validation_folds()[0][1].X.tolist()
    train_rows = len(task.train)
    assert all(len(fit) >= train_rows / 2 for fit, _ in folds)  # every fold fits on half of train or more
    assert all(set(map(float, held.X[:, 0])) <= set(map(float, task.train.X[:, 0])) for _, held in folds)  # train only
    assert len(selection_folds(task, max_params=40)) == 1  # a fold the laws cannot be fitted on is not added


def generic(ident, r2, n_params, name):
    import dataclasses

    from evolve.propose.seed_kinds import GENERIC_NOTE

    return dataclasses.replace(seeded(ident, r2, n_params), explanation=f"seed law {name} {GENERIC_NOTE}")


def test_of_the_generic_seeds_only_the_power_law_is_the_protected_reference():
    import dataclasses

    from evolve.propose.seed_kinds import is_reference_seed

    assert is_reference_seed(generic(1, 0.5, 3, "power_law_with_offset"))
    assert not is_reference_seed(generic(2, 0.9, 2, "log_linear"))
    assert is_reference_seed(dataclasses.replace(seeded(3, 0.5, 3), explanation="seed law log_linear.py"))  # a user's seed is a prior
    assert not is_reference_seed(dataclasses.replace(generic(1, 0.5, 3, "power_law_with_offset"), proposer="offline"))


def test_a_generic_seed_better_on_validation_within_the_margin_does_not_displace_the_power_law(tmp_path):
    """With no seed law of its own, a run protects the generic power law with offset: the
    log-linear generic law, a little better on the validation rows (by less than the margin
    many tried laws call for), is a candidate like any other and does not stand in its place;
    far better, it is returned."""
    task = make_task(tmp_path, param_cap=10)
    laws = {1: lambda x, y: truth(x), 2: lambda x, y: truth(x) + (y - truth(x)) * np.where(np.cos(9 * np.log(x)) > 0, 0.8, 0.2)}
    laws.update({i: distinct_noise(i) for i in range(3, 300)})
    tried = [record(i, 0.1, 4) for i in range(3, 300)]
    records = [generic(1, 0.9, 3, "power_law_with_offset"), generic(2, 0.97, 2, "log_linear")] + tried
    choice = choose(records, task, fake_run(task, laws))
    assert choice.record.id == 1 and "stands" in choice.reason
    laws[1] = lambda x, y: truth(x) + 0.05  # the power law off by a bias: the far better generic law wins
    assert choose(records, task, fake_run(task, laws)).record.id == 2
    user = [seeded(1, 0.9, 3), seeded(2, 0.97, 2)] + tried  # two seeds of the user's: the better one stands
    laws[1] = lambda x, y: truth(x)
    assert choose(user, task, fake_run(task, laws)).record.id == 2


def test_without_the_reference_a_run_still_protects_a_seed():
    from evolve.selection import protected

    power, log_linear, evolved = generic(1, 0.5, 3, "power_law_with_offset"), generic(2, 0.9, 2, "log_linear"), record(3, 0.95, 4)
    rows = np.zeros(3)
    assert [c[0].id for c in protected([(power, rows, rows), (log_linear, rows, rows), (evolved, rows, rows)])] == [1]
    assert [c[0].id for c in protected([(log_linear, rows, rows), (evolved, rows, rows)])] == [2]  # the power law failed to fit
    assert protected([(evolved, rows, rows)]) == []


def test_coefficients_that_cancel_only_when_fitted_on_all_train_rows_are_refused(tmp_path):
    # A new user's law passed with validation parameters that did not cancel, then fitted
    # c = 91308 with a = -91304.8 on all its train rows: the fit predict and export use.
    task = make_task(tmp_path)
    laws = {1: lambda x, y: truth(x), 2: wobble}
    inner = fake_run(task, laws)
    every_row = len(task.train.X)

    def run(code, jobs, task_):
        report = inner(code, jobs, task_)
        on_all = sum(len(job.X_fit) for job in jobs) == every_row
        params = [91308.0, -91304.8, 0.5] if code.endswith("return 2\n") and on_all else [2.0, 5.0, 0.5]
        return RunReport(Status.OK, "", report.predictions, {job.group: params for job in jobs})

    simple, cancel = record(1, 0.95, 3, [2.0, 5.0, 0.5]), record(2, 0.951, 3, [2.0, 5.0, 0.5])
    choice = choose([cancel, simple], task, run)
    assert choice.record.id == 1 and 2 in choice.refused and "cancelling coefficients" in choice.reason
    plain = choose([cancel, simple], task, fake_run(task, laws))  # the same laws, no fit cancelling: nothing refused
    assert 2 not in plain.refused


def test_a_law_that_turns_back_beyond_the_data_is_refused_unless_far_better(tmp_path):
    # A new user's law predicted the loss rising again past the largest run; within noise of
    # a law that keeps falling, it must not be the one returned (evolve.extrapolation).
    task = make_task(tmp_path)
    edge = float(task.train.X[:, 0].max())

    def turning(x, y):  # wobble on train's rows, rising again beyond them
        return np.where(x > edge, truth(x) + 0.5 * np.log(np.maximum(x, edge) / edge), wobble(x, y))

    laws = {1: lambda x, y: truth(x), 2: turning}
    choice = choose([record(2, 0.951, 3, [2.0, 5.0, 0.5]), record(1, 0.95, 3, [2.0, 5.0, 0.5])], task, fake_run(task, laws))
    assert choice.record.id == 1 and 2 in choice.refused
    assert "predictions beyond the data that go against train" in choice.reason
    same_inside = choose([record(2, 0.951, 3, [2.0, 5.0, 0.5]), record(1, 0.95, 3, [2.0, 5.0, 0.5])], task, fake_run(task, {1: laws[1], 2: wobble}))
    assert same_inside.record.id == 2 and not same_inside.refused  # what refused it is beyond the data alone
    laws = {1: lambda x, y: truth(x) + 0.5, 2: lambda x, y: np.where(x > edge, truth(x) + np.log(np.maximum(x, edge) / edge), truth(x))}
    strong = choose([record(2, 0.9, 3, [2.0, 5.0, 0.5]), record(1, 0.2, 3, [2.0, 5.0, 0.5])], task, fake_run(task, laws))
    assert strong.record.id == 2 and "warning: the chosen law has predictions beyond the data that go against train (group all_data: y rises" in strong.reason
