"""CSVs as researchers have them, made into tasks: a pandas index column, a spreadsheet's
byte-order mark, column names with spaces and units, empty cells, another separator, and
folders that cannot be written. Each is either read right or refused with one line and a
non-zero exit, leaving nothing behind. All in-process and on tiny files: seconds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from evolve.cli.main import main
from evolve.cli.run_cmd import formula_lines
from evolve.cli.use_cmd import rows_to_predict
from evolve.report.export import FORMULA_HEADER
from evolve.scoring.formula_check import formula_values
from evolve.symbolic import symbol_names, trace_expressions
from evolve.tasks import TaskError, load_task


def write(path: Path, header: list[str], rows: list[list], prefix: str = "") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(prefix)
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def grid(groups=("a", "b"), sizes=(1e7, 3e7, 1e8, 3e8, 1e9, 3e9, 1e10, 3e10)) -> list[list]:
    """(group, size, loss) rows: values computed, this tests reading, not discovery."""
    return [[g, n, 1.5 + k * 0.1 + 30 / n**0.3] for k, g in enumerate(groups) for n in sizes]


def new_task(tmp_path: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["tasks", "new", str(tmp_path / "t"), *args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, err: str, tmp_path: Path, fragment: str) -> bool:
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err and not (tmp_path / "t").exists()


def test_an_unnamed_index_column_is_not_taken_for_the_group(tmp_path, capsys):
    # pandas' to_csv writes its index as a first column with an empty name
    rows = [[i, n, loss] for i, (_, n, loss) in enumerate(grid(groups=("a",)))]
    path = write(tmp_path / "d.csv", ["", "size", "loss"], rows)
    code, out, err = new_task(tmp_path, "--csv", str(path), "--features", "size", "--targets", "loss", capsys=capsys)
    assert code == 0, err
    assert load_task(tmp_path / "t").train.group_names() == ["all_data"] and "1 group(s)" in out


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path, capsys):
    path = write(tmp_path / "d.csv", ["size", "loss"], [r[1:] for r in grid(groups=("a",))], prefix="\ufeff")
    code, _, err = new_task(tmp_path, "--csv", str(path), "--features", "size", "--targets", "loss", capsys=capsys)
    assert code == 0, err
    assert load_task(tmp_path / "t").features == ("size",)


def test_names_with_spaces_and_units_work_in_features_and_in_a_product_split(tmp_path, capsys):
    rows = [[g, n, 20 * n, loss] for g, n, loss in grid()]
    path = write(tmp_path / "d.csv", ["model family", "N (params)", "D [tokens]", "val loss (nats)"], rows)
    code, _, err = new_task(tmp_path, "--csv", str(path), "--features", "N (params),D [tokens]", "--targets", "val loss (nats)",
                            "--group-column", "model family", "--test-largest", "N (params) * D [tokens]", "0.25", capsys=capsys)
    assert code == 0, err
    task = load_task(tmp_path / "t")
    assert task.features == ("N (params)", "D [tokens]") and task.source_group_column == "model family"
    assert task.test.X[:, 0].min() > task.train.X[:, 0].max()  # the largest N·D per group are test
    assert 'column = "N (params)*D [tokens]"' in (tmp_path / "t" / "task.toml").read_text()


def test_formulas_trace_and_check_with_feature_names_that_are_not_identifiers():
    features = ("N (params)", "D [tokens]", "p0", "class")
    assert symbol_names(features) == ["N_params", "D_tokens", "x_p0", "x_class"]
    code = "import numpy as np\ndef scaling_law_func(X, p):\n    return p[0] + p[1] * X[:, 0] ** -p[2] + np.log(X[:, 1]) * X[:, 2] / X[:, 3]\n"
    expressions = [str(e) for e in trace_expressions(code, features, 1, 3)]
    rows = np.array([[1e8, 2e9, 3.0, 4.0], [1e9, 5e10, 1.5, 2.0]])
    params = [1.2, 40.0, 0.3]
    expected = params[0] + params[1] * rows[:, 0] ** -params[2] + np.log(rows[:, 1]) * rows[:, 2] / rows[:, 3]
    assert np.allclose(formula_values(expressions, features, rows, params)[:, 0], expected)


@pytest.mark.parametrize("content, fragment", [
    ("", "is empty: the first line must name the columns"),
    ("size,size,loss\n1,2,3\n", "'size' appear more than once"),
    ("size;loss\n1;2\n", "looks ';'-separated"),
])
def test_malformed_files_are_refused_with_one_line(tmp_path, capsys, content, fragment):
    path = tmp_path / "d.csv"
    path.write_text(content)
    code, _, err = new_task(tmp_path, "--csv", str(path), "--features", "size", "--targets", "loss", capsys=capsys)
    assert refused(code, err, tmp_path, fragment), err


@pytest.mark.parametrize("args, fragment", [
    (["--features", "sise", "--targets", "loss"], "no feature column 'sise'"),
    (["--features", "size", "--targets", "los"], "no target column 'los'"),
    (["--features", "size,size", "--targets", "loss"], "size named twice"),
    (["--features", "size", "--targets", "loss", "--group-column", "loss"], "both the group column and a feature or target"),
])
def test_wrong_column_names_name_the_option_they_came_from(tmp_path, capsys, args, fragment):
    path = write(tmp_path / "d.csv", ["group", "size", "loss"], grid())
    code, _, err = new_task(tmp_path, "--csv", str(path), *args, capsys=capsys)
    assert refused(code, err, tmp_path, fragment), err


def test_empty_cells_are_refused_with_a_count_or_left_out_on_request(tmp_path, capsys):
    rows = grid(groups=("a",)) + grid(groups=("a",), sizes=(1e11, 3e11))
    rows[-1][2] = ""  # a run whose loss was never logged
    rows[-2][2] = " "
    path = write(tmp_path / "d.csv", ["group", "size", "loss"], rows)
    code, _, err = new_task(tmp_path, "--csv", str(path), "--features", "size", "--targets", "loss", capsys=capsys)
    assert refused(code, err, tmp_path, "2 of 10 rows have an empty cell"), err
    assert "--drop-missing" in err
    code, out, err = new_task(tmp_path, "--csv", str(path), "--features", "size", "--targets", "loss", "--drop-missing", capsys=capsys)
    assert code == 0 and "2 row(s) with an empty cell left out" in out, err
    task = load_task(tmp_path / "t")
    assert len(task.train) + len(task.test) == 8


def test_a_folder_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, capsys):
    path = write(tmp_path / "d.csv", ["size", "loss"], [r[1:] for r in grid(groups=("a",))])
    for target in (path, path / "under_a_file"):
        code = main(["tasks", "new", str(target), "--csv", str(path), "--features", "size", "--targets", "loss"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]
    code = main(["tasks", "new", str(tmp_path / "t"), "--csv", str(tmp_path), "--features", "size", "--targets", "loss"])
    assert code == 2 and "is a folder, not a CSV file" in capsys.readouterr().err


def test_predict_reads_the_group_column_of_the_csv_the_task_was_made_from(tmp_path, capsys):
    source = write(tmp_path / "d.csv", ["model", "size", "loss"], grid())
    assert main(["tasks", "new", str(tmp_path / "t"), "--csv", str(source), "--features", "size", "--targets", "loss", "--group-column", "model"]) == 0
    assert "note: test is the largest 20% of size per group (the first feature" in capsys.readouterr().err  # the default split, said
    task = load_task(tmp_path / "t")
    rows, groups, column = rows_to_predict(source, task, None)  # the user's own CSV, with its own 'model' column
    assert groups.tolist() == [r[0] for r in grid()] and len(rows) == len(groups) and column == "model"
    with pytest.raises(TaskError, match="--group 'b', but its column 'model' names other groups \\(a\\)"):
        rows_to_predict(source, task, "b")  # a contradiction is refused, not settled silently
    both = write(tmp_path / "both.csv", ["group", "model", "size"], [["cohort-1", "a", 1e12]])  # an unrelated 'group' too
    assert rows_to_predict(both, task, None)[2] == "model"
    assert rows_to_predict(both, task, None)[1].tolist() == ["a"]
    only_b = write(tmp_path / "b.csv", ["model", "size"], [["b", 1e12]])
    assert rows_to_predict(only_b, task, "b")[1].tolist() == ["b"]
    bare = write(tmp_path / "new.csv", ["size"], [[1e12]])
    _, forced, column = rows_to_predict(bare, task, "b")
    assert forced.tolist() == ["b"] and column is None
    with pytest.raises(TaskError, match="no group column .*'model' column.*--group"):
        rows_to_predict(bare, task, None)
    blanks = write(tmp_path / "blank.csv", ["model", "size"], [["", 1e12], ["b", 2e12]])
    assert rows_to_predict(blanks, task, "b")[1].tolist() == ["b", "b"]  # a blank cell takes --group
    longer = write(tmp_path / "long.csv", ["model", "size"], [["b", 1e12, "extra"]])
    with pytest.raises(TaskError, match="line 2 has more cells than the header's 2 columns"):
        rows_to_predict(longer, task, None)


def test_the_run_prints_the_checked_formula_best_py_carries(tmp_path):
    best = tmp_path / "best.py"
    best.write_text(f"# Law exported from run r, program 3\n{FORMULA_HEADER} 'a' with its fitted constants (checked against the\n"
                    "# group's rows):\n#     loss = 1.5 + 30/size**0.3\n\n# EVOLVE-BLOCK-START\n# The law of group is not read from code\n")
    assert formula_lines(best) == ["law of group 'a' with its fitted constants (checked against the group's rows):", "     loss = 1.5 + 30/size**0.3"]
    best.write_text("# Law exported from run r, program 3\n\n# EVOLVE-BLOCK-START\n")
    assert formula_lines(best) == []


def test_output_to_a_pipe_keeps_long_lines_whole(capsys):
    from evolve.cli.display import console, print_code

    out = console()
    assert not out.is_terminal
    sentence = " ".join(f"word{i}" for i in range(60))
    out.print(sentence)
    print_code(out, "x = [" + ", ".join(map(str, range(60))) + "]\ny = 2", line_numbers=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == sentence and lines[1].startswith("1 x = [0, 1") and lines[1].endswith("59]") and lines[2] == "2 y = 2"
    from evolve.cli.progress import RunProgress

    progress = RunProgress()  # the seed lines of `evolve run` go to stderr the same way
    progress.console.print(sentence)
    assert capsys.readouterr().err.splitlines() == [sentence]


def test_the_size_and_data_features_can_be_named_when_their_names_are_not_the_usual_ones():
    from evolve.api import LawError, size_and_data_features

    features = ("unique tokens", "Model Size", "Training Tokens")
    assert size_and_data_features(features, "Model Size", "Training Tokens") == (1, 2)
    assert size_and_data_features(("params", "tokens")) == (0, 1)
    assert size_and_data_features(features) == (1, 2)  # "unique tokens" is another quantity, "Training Tokens" is D
    with pytest.raises(LawError, match="--size and --data"):
        size_and_data_features(("Model Size", "Training Tokens", "seen tokens"))  # two names say D: ambiguous
    with pytest.raises(LawError, match="no feature 'N'"):
        size_and_data_features(features, "N", "Training Tokens")
    assert size_and_data_features(("D (tokens)", "N (params)")) == (1, 0)  # units in brackets
    assert size_and_data_features(("lr", "Model Parameters", "Training Tokens")) == (1, 2)  # one word each, unambiguous
    for other in (("N", "tokens_per_param"), ("params", "batch_samples")):  # other quantities, not D
        with pytest.raises(LawError, match="needs a model-size and a data feature"):
            size_and_data_features(other)
    with pytest.raises(LawError, match="name the same feature 'Model Size'"):
        size_and_data_features(features, "Model Size", "Model Size")


def test_a_wrong_run_setting_is_named_alone(tmp_path, capsys):
    assert main(["run", "sft_scaling_law", "--iterations", "-5", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "iterations must be >= 0, not -5" in err and "islands" not in err and not (tmp_path / "r").exists()


def test_settings_that_could_not_act_are_refused_before_the_run_starts(tmp_path, capsys):
    for flags, said in ((["--prompts-dir", str(tmp_path / "nowhere")], "prompts folder"),
                        (["--prompts-dir", str(tmp_path)], "lacks system.j2 and user.j2"),
                        (["--budget-usd", "5"], "a cost budget needs model prices")):
        assert main(["run", "sft_scaling_law", *flags, "--run-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1 and not (tmp_path / "r").exists(), err
    from evolve.cli.run_cmd import build_config

    priced = tmp_path / "priced.toml"
    priced.write_text('[[model.models]]\nname = "m"\nprice_prompt_per_mtok = 0.15\n')
    assert build_config("sft_scaling_law", priced, (), {"budget_usd": 5.0}).budget_usd == 5.0  # with prices it can bind


def test_predict_refuses_an_output_it_cannot_write_before_fitting(tmp_path):
    from evolve.cli.use_cmd import check_writable

    with pytest.raises(TaskError, match="it is a folder"):
        check_writable(tmp_path)
    with pytest.raises(TaskError, match="no writable folder"):
        check_writable(tmp_path / "missing" / "out.csv")
    check_writable(tmp_path / "out.csv")


def test_a_test_share_far_from_the_fraction_asked_is_explained(tmp_path, capsys):
    # three replicates per size: the largest size alone is 1/3 of a 9-row group, not 20%
    rows = [[n, 1.5 + 30 / n**0.3 + 0.01 * r] for n in (1e7, 1e8, 1e9) for r in range(3)]
    source = write(tmp_path / "d.csv", ["size", "loss"], rows)
    code, out, err = new_task(tmp_path, "--csv", str(source), "--features", "size", "--targets", "loss", "--test-largest", "size", "0.2", capsys=capsys)
    assert code == 0 and "3 test rows" in out and "6 train rows (" in out, err  # train.csv's count, validation within it
    assert "note: test is 33% of the rows, not the 20% asked" in err and "size go to the same side" in err
    even = write(tmp_path / "e.csv", ["size", "loss"], [r[1:] for r in grid(groups=("a",), sizes=tuple(10.0**k for k in range(7, 17)))])
    code, _, err = new_task(tmp_path / "x", "--csv", str(even), "--features", "size", "--targets", "loss", capsys=capsys)
    assert code == 0 and "not the 20% asked" not in err, err


def test_a_zero_in_a_feature_that_spans_scales_gets_a_note(tmp_path, capsys):
    rows = [r[1:] for r in grid(groups=("a",), sizes=tuple(10.0**k for k in range(6, 26)))]
    rows[3][0] = 0.0  # params=0: a typo, or a missing value written as 0
    source = write(tmp_path / "d.csv", ["params", "loss"], rows)
    code, _, err = new_task(tmp_path, "--csv", str(source), "--features", "params", "--targets", "loss", capsys=capsys)
    assert code == 0 and "note: 1 row(s) have params <= 0 (params otherwise spans 1e+06 to 1e+25)" in err, err


def test_a_table_on_a_terminal_prints_brackets_as_written():
    # column names with units ("D [tokens]") and program messages are text, never rich markup
    import io

    from rich.console import Console

    from evolve.cli.display import print_table

    out = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    print_table("N = N (params), D = D [tokens]", ["D [tokens]", "note"], [[1e9, "[red]x[/red] [link=http://a]y"]], out)
    text = out.file.getvalue()
    assert "D = D [tokens]" in text and "[red]x[/red] [link=http://a]y" in text and text.count("D [tokens]") == 2


def test_a_table_on_a_narrow_terminal_never_splits_a_number_or_cuts_a_cell():
    """At 80 columns `evolve runs` folded "0.795461" into "0.795 / 461" and "finished" into
    "finis / hed", which read as separate values: short spaceless cells stay whole, and a
    table that cannot fit so prints one block per row instead."""
    import io
    import re

    from rich.console import Console

    from evolve.cli.display import print_table

    columns = ["run", "task", "started", "status", "iterations", "law", "its val R²", "its test R²", "best val R²", "tokens"]
    rows = [["sft_scaling_law-20261204-190218", "sft_scaling_law", "2026-12-04 19:02", "interrupted", "60/150", "6", "0.994199", "0.993183", "0.9942", "0"]]
    for width in (80, 200):
        out = Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)
        print_table("Runs", columns, rows, out)
        text = out.file.getvalue()
        assert all(len(line) <= width for line in text.splitlines())
        for cell in ("0.994199", "0.993183", "interrupted", "60/150", "sft_scaling_law-20261204-190218"):
            assert re.search(rf"(^|[\s│:]){re.escape(cell)}($|[\s│,])", text, re.M), (width, cell)
    narrow = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    print_table("Runs", columns, rows, narrow)
    assert "its val R² 0.994199" in narrow.file.getvalue()  # a paragraph per row at 80 columns, breaking between fields


def test_a_table_at_any_width_keeps_every_header_word_and_cell_whole():
    """At 90-100 columns `evolve archive RUN list` cut its "tokens" header to "t" and pushed
    the column off the screen (headers were not counted in the width a table needs), and
    `evolve optimize` broke a group name in the middle of a word."""
    import io
    import re

    from rich.console import Console

    from evolve.cli.display import print_table

    columns = ["id", "island", "iter", "parent", "proposer", "status", "val R²", "test R²", "params", "size", "tokens"]
    rows = [["11", "1", "1", "—", "offline", "ok", "1.0000", "1.0000", "4", "701", "0"],
            ["1", "0", "0", "—", "seed", "ok", "0.9999", "—", "4", "195", "12,345"]]
    groups = [["refinedweb_cosine_long", "1e+18", "3.2e+08", "5.2e+08", "2.934", "beyond the data's N or D"]]
    for width in range(60, 141, 5):
        out = Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)
        print_table("Programs", columns, rows, out)
        print_table("Allocation", ["group", "compute", "N", "D", "predicted loss", "caveat"], groups, out)
        text = out.file.getvalue()
        assert all(len(line) <= width for line in text.splitlines()), width
        for word in [w for c in columns for w in c.split()] + ["12,345", "0.9999", "refinedweb_cosine_long", "3.2e+08"]:
            assert re.search(rf"(^|[\s│,]){re.escape(word)}($|[\s│,])", text, re.M), (width, word)


def test_a_missing_group_column_names_the_columns_there_are(tmp_path, capsys):
    source = write(tmp_path / "d.csv", ["model", "size", "loss"], grid())
    code, _, err = new_task(tmp_path, "--csv", str(source), "--features", "size", "--targets", "loss", "--group-column", "cfg", capsys=capsys)
    assert code == 2 and "missing group column 'cfg' (has 'model', 'size', 'loss')" in err and not (tmp_path / "t").exists()


def test_a_feature_constant_in_train_is_named_and_a_prediction_outside_the_domain_too(tmp_path, capsys):
    """A new-user trial: a constant feature came out of `tasks new` unremarked (the law then
    read `1.12/const**0.81 + 1.12`), and `predict` at a size of -5 answered 69.3 silently
    (the law's floor at 1e-12 answered for it)."""
    from evolve.cli.use_cmd import outside_the_domain

    rows = [[g, n, 7.0, loss] for g, n, loss in grid()]
    source = write(tmp_path / "d.csv", ["model", "size", "const", "loss"], rows)
    code, _, err = new_task(tmp_path, "--csv", str(source), "--features", "size,const", "--targets", "loss", "--group-column", "model", capsys=capsys)
    assert code == 0 and "note: const is 7 in every train row: no law can learn its effect" in err
    task = load_task(tmp_path / "t")
    assert outside_the_domain(task, np.array([[1e9, 7.0], [-5.0, 7.0], [0.0, 7.0]])) == [
        "2 row(s) have size <= 0, where every train row has it positive: the law is not defined there, and what it predicts for them means nothing"]
    assert outside_the_domain(task, np.array([[1e12, 7.0]])) == []


def test_tasks_new_notes_copies_a_feature_fixed_within_groups_and_folds_too_small_to_judge(tmp_path, capsys):
    """A new-user trial: 50 duplicated rows, a group column that held the model size fixed in
    every group, and a 7-row file whose validation fitted on 2 rows all went unremarked."""
    rows = [[g, n, 10 * n, loss] for g, n, loss in grid()]
    source = write(tmp_path / "d.csv", ["model", "size", "tokens", "loss"], rows + rows[:3])
    code, _, err = new_task(tmp_path, "--csv", str(source), "--features", "size,tokens", "--targets", "loss", capsys=capsys)
    assert code == 0 and "note: 3 train row(s) repeat another exactly" in err, err
    per_model = [[f"m{k}", n, d, 2 + 30 / n**0.3 + 20 / d**0.2] for k, n in enumerate((1e7, 1e8, 1e9)) for d in np.geomspace(1e9, 1e11, 8)]
    source = write(tmp_path / "m.csv", ["model", "size", "tokens", "loss"], per_model)
    code, _, err = main(["tasks", "new", str(tmp_path / "m"), "--csv", str(source), "--features", "size,tokens", "--targets", "loss",
                         "--group-column", "model"]), *capsys.readouterr()
    assert code == 0 and "note: size has one value in each group" in err, err
    tiny = write(tmp_path / "tiny.csv", ["size", "loss"], [[n, 1.5 + 30 / n**0.3] for n in (1e7, 3e7, 1e8, 3e8, 1e9, 3e9, 1e10)])
    code, _, err = main(["tasks", "new", str(tmp_path / "tiny"), "--csv", str(tiny), "--features", "size", "--targets", "loss"]), *capsys.readouterr()
    assert code == 0 and "note: validation fits a group on as few as 2 row(s), fewer than the 3 parameters" in err, err
