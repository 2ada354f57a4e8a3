"""Settings: one declaration per setting (name, type, help, default), precedence, and the command
lines generated from them."""

import pytest

from mtkit import config as C
from mtkit import config_io


def test_settings_precedence_file_then_options_then_set(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "tiny"\n[train]\nlr = 0.1\nwarmup = 7\n[data]\nmax_tokens = 999\n', encoding="utf-8")
    cfg = config_io.assemble(path, {"train.lr": 0.2, "train.warmup": None, "data.max_tokens": 500},
                     ["data.max_tokens=300"])
    assert cfg.preset == "tiny" and cfg.model == C.preset("tiny")
    assert cfg.train.lr == 0.2  # an option given beats the file
    assert cfg.train.warmup == 7  # an option not given (None) leaves the file's value
    assert cfg.data.max_tokens == 300  # --set comes last
    assert config_io.assemble(None, {}, []) == C.RunConfig()


def _params(*command: str) -> dict:
    import typer.main

    from mtkit.cli import app

    group = typer.main.get_command(app)
    for name in command:
        group = group.commands[name]  # type: ignore[attr-defined]
    return {p.opts[0]: p for p in group.params}


def test_train_options_are_the_config_declarations():
    """Each of `mtkit train`'s setting options is declared once, in mtkit.config: its name, type
    and help come from the field (data.max_tokens -> --max-tokens), and its value reaches that key."""
    from mtkit.cli.training import TRAIN_OPTIONS

    params = _params("train")
    for key in TRAIN_OPTIONS:
        assert params[config_io.option_name(key)].help.startswith(config_io.describe(key).help), key
    assert params["--max-time"].help.startswith("seconds of wall time, 0: no limit")
    assert params["--lr"].help.endswith(f"[default: {C.TrainConfig().lr}]")
    assert "default" not in params["--dropout"].help  # a model's default is its preset's
    assert params["--compile"].secondary_opts == ["--no-compile"]
    cfg = config_io.assemble(None, {"data.max_tokens": 123, "model.dropout": 0.25, "train.compile": True}, [])
    assert (cfg.data.max_tokens, cfg.model.dropout, cfg.train.compile) == (123, 0.25, True)


def test_translate_and_tokenizer_options_are_the_config_declarations():
    """`mtkit translate`'s search options are DecodeConfig's fields and `mtkit tokenizer train`'s
    TokenizerOptions', with their defaults from there: none is typed twice."""
    from mtkit.cli.translating import DECODE_OPTIONS

    def shown(param) -> str:
        return param.help.replace("\\[", "[")  # rich markup escapes the brackets

    params = _params("translate")
    defaults = C.DecodeConfig()
    for key in DECODE_OPTIONS:
        assert shown(params[config_io.option_name(key)]).startswith(config_io.describe(key, C.DecodeConfig).help), key
        default = getattr(defaults, key)
        if isinstance(default, bool):  # a yes/no option shows the flag its default means
            default = f"--{'' if default else 'no-'}{key.replace('_', '-')}"
        assert shown(params[config_io.option_name(key)]).endswith(f"[default: {default}]"), key
    assert "8,000 on a CPU, 65,536 on a GPU" in params["--max-tokens"].help
    tokenizer = _params("tokenizer", "train")
    assert shown(tokenizer["--vocab-size"]).endswith(f"[default: {C.TokenizerOptions().vocab_size}]")
    assert tokenizer["--joint"].secondary_opts == ["--separate"]
    assert shown(tokenizer["--joint"]).endswith("[default: --joint]")


@pytest.mark.parametrize("root", [C.ModelConfig, C.DataConfig, C.TrainConfig, C.DecodeConfig, C.TokenizerOptions])
def test_every_setting_has_its_help(root):
    """A setting's help is its declaration's: none is missing (a comment over two lines once lost
    its help silently)."""
    from dataclasses import fields

    for f in fields(root):
        assert f.metadata.get("help"), f"{root.__name__}.{f.name} has no help"


def test_the_translate_options_reach_the_search(reverse_model):
    from helpers import run_in_process

    code, _, err = run_in_process("translate", "-m", str(reverse_model), "--beam", "0", stdin="alpha\n")
    assert code == 2 and "--beam must be positive" in err
    code, out, err = run_in_process("translate", "-m", str(reverse_model), "--beam", "3", "--nbest", "3",
                                    "--format", "jsonl", stdin="alpha bravo\n")
    assert code == 0 and len(__import__("json").loads(out)["nbest"]) == 3, err
