"""The settings tree: defaults < YAML file < SERVEWISE_* environment < explicit overrides."""

from pathlib import Path

import pytest

from assistant.config import load_settings
from assistant.errors import ConfigError


def test_defaults():
    s = load_settings(environ={})
    assert s.data_dir == Path(".servewise")
    assert s.reranker.kind == "maxsim"
    assert s.retrieval.mode == "hybrid"


def test_file_then_env_then_overrides(tmp_path):
    cfg = tmp_path / "sw.yaml"
    cfg.write_text("data_dir: /from/file\nretrieval:\n  top_k: 7\n  rrf_k: 10\n")
    env = {"SERVEWISE_RETRIEVAL__TOP_K": "9", "SERVEWISE_DATA_DIR": "/from/env"}
    s = load_settings(cfg, environ=env)
    assert s.retrieval.top_k == 9 and s.retrieval.rrf_k == 10
    assert s.data_dir == Path("/from/env")
    s = load_settings(cfg, overrides={"data_dir": "/cli"}, environ=env)
    assert s.data_dir == Path("/cli")


def test_config_file_from_environment(tmp_path):
    cfg = tmp_path / "sw.yaml"
    cfg.write_text("store:\n  chroma_url: http://127.0.0.1:9\n")
    s = load_settings(environ={"SERVEWISE_CONFIG": str(cfg)})
    assert s.store.chroma_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("retrieval:\n  top_k: 0\n", "retrieval.top_k"),
        ("retreival:\n  top_k: 3\n", "retreival"),
        ("reranker:\n  kind: magic\n", "reranker.kind"),
        ("- a list\n", "mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_settings(cfg, environ={})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", environ={})
