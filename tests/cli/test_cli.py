"""The command line: bad input is one clear line and exit code 2, before any model is loaded."""
import pytest

from helpers import cli, cli_process, tiny_recipe, write_recipe


@pytest.mark.parametrize("override,expected", [
    ("training.lrr=1", "training.lrr: unknown key"),
    ("data.train=/nonexistent/train.csv", "data.train: file not found: /nonexistent/train.csv"),
    ("data.label_column=sentiment", "data.label_column: column 'sentiment' not in"),
    ("backbone.path=/nonexistent/model", "backbone.path: /nonexistent/model is not a folder"),
])
def test_bad_recipe_fails_fast_with_one_line(tiny_bert, sentiment_files, tmp_path, override, expected):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_bert, sentiment_files, tmp_path / "run"))
    res = cli("train", recipe, "--set", override)  # in this process: test_terminal.py runs a real one per command
    assert res.code == 2
    err = res.err_lines
    assert len(err) == 1 and expected in err[0], res.err
    assert not (tmp_path / "run" / "adapter").exists()


@pytest.mark.slow  # trains a model in a real process (the in-process guard cannot see it)
def test_train_eval_predict_export(tiny_bert, sentiment_files, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_bert, sentiment_files, tmp_path / "run"))
    assert cli_process("train", recipe, "--set", "training.epochs=1").returncode == 0
    res = cli_process("eval", tmp_path / "run")
    assert res.returncode == 0 and '"accuracy"' in res.stdout
    res = cli_process("predict", tmp_path / "run", "--text", "the film was great")
    assert res.returncode == 0 and '"label"' in res.stdout
    res = cli_process("export", tmp_path / "run", "--out", tmp_path / "exp")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "exp" / "export_report.json").is_file()
    res = cli_process("eval", tmp_path / "nope")
    assert res.returncode == 2 and "not a finished adapterkit run" in res.stderr


def test_predict_usage_errors_exit_2_with_one_line(tmp_path):
    for args in (["predict", str(tmp_path), "--file", str(tmp_path / "missing.txt")], ["predict", str(tmp_path)]):
        res = cli(*args)
        assert res.code == 2
        err = res.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("adapterkit: error: ")
        assert ("missing.txt not found" in err[0]) if "--file" in args else ("give --text" in err[0])


def test_corrupted_run_status_is_a_one_line_error(tmp_path):
    from adapterkit.errors import RunDirError
    from adapterkit.files import read_json
    from adapterkit.runs import finished

    status = tmp_path / "run.json"
    status.write_text('{"status": "fini')  # a torn write
    with pytest.raises(RunDirError, match=r"run.json: run status is corrupted"):
        finished(status)
    with pytest.raises(RunDirError, match=r"labels.json: label map missing"):
        read_json(tmp_path / "labels.json", "label map")
    status.write_text('{"status": "finished"}')
    assert finished(status)


@pytest.mark.parametrize("args,expected", [(["trian", "r.yaml"], "No such command 'trian'. Did you mean 'train'?"),
                                           (["train", "r.yaml", "--cv", "two"], "Invalid value for '--cv'")])  # not an integer (--cv 1: a bound, one adapterkit line)
def test_usage_errors_are_one_error_line_not_a_traceback(args, expected):
    res = cli_process(*args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [l for l in res.stderr.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], res.stderr
