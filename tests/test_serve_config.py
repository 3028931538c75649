"""The checked-in Serve config files are generated from the settings and must not drift."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from assistant.config import load_settings
from assistant.errors import ConfigError
from serve.config import DEPLOYMENTS, render, serve_config, settings_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("profile", "name"), [("cpu", "config.yaml"), ("gpu", "config.gpu.yaml")])
def test_checked_in_config_matches_the_settings(profile, name):
    settings = load_settings(overrides={"serve": {"profile": profile}}, environ={})
    assert (ROOT / "serve" / name).read_text() == render(settings), (
        f"serve/{name} is stale: run `servewise serve-config --profile {profile} > serve/{name}`"
    )


def test_profiles_layer_under_the_user_settings():
    gpu = load_settings(
        environ={"SERVEWISE_SERVE__PROFILE": "gpu", "SERVEWISE_SERVE__GENERATOR__NUM_REPLICAS": "2"}
    )
    assert gpu.serve.generator.ray_actor_options == {"num_cpus": 2, "num_gpus": 1}
    assert gpu.serve.generator.num_replicas == 2
    assert gpu.serve.ingress.max_ongoing_requests == 128  # profile keys do not reset other defaults
    with pytest.raises(ConfigError, match="unknown profile 'tpu'"):
        load_settings(environ={"SERVEWISE_SERVE__PROFILE": "tpu"})


def test_args_carry_only_what_differs_and_never_the_token():
    settings = load_settings(
        overrides={"serve": {"auth_token": "s3cret", "port": 9000}, "retrieval": {"top_k": 7}}, environ={}
    )
    args = settings_args(settings)
    assert args == {"serve": {"port": 9000, "profile": "cpu"}, "retrieval": {"top_k": 7}}
    assert "s3cret" not in yaml.safe_dump(serve_config(settings))


def test_every_deployment_gets_its_options():
    config = serve_config(load_settings(environ={}))
    deployments = config["applications"][0]["deployments"]
    assert [d["name"] for d in deployments] == list(DEPLOYMENTS)
    assert all(d["max_ongoing_requests"] > 5 for d in deployments)  # Serve's default queues chats
    assert config["applications"][0]["import_path"] == "serve.app:build_app"


def test_a_profile_flag_applies_the_whole_profile_layer(tmp_path):
    from assistant.cli import Context

    settings = Context(None, {"data_dir": str(tmp_path)}).with_flags({"serve": {"profile": "gpu", "port": 9}})
    assert settings.serve.port == 9 and settings.data_dir == tmp_path
    assert settings.serve.generator.ray_actor_options["num_gpus"] == 1


def test_the_local_ray_env_follows_serve_ray():
    from assistant.serve_settings import RaySettings
    from serve.cli import ray_env

    env = ray_env(load_settings(environ={}).serve.ray)
    assert env == {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1",
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
        "RAY_worker_niceness": "0",  # Ray's own default, 15, puts every replica behind the model
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1.0",  # Serve's 30 s made Ctrl-C take 33 s
    }
    plain = ray_env(
        RaySettings(
            throughput_optimized=False, control_loop_interval_s=0.1, worker_niceness=5, ingress_drain_s=0
        )
    )
    assert plain == {
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1",
        "RAY_worker_niceness": "5",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0.0",
    }


def test_the_cpu_profile_puts_the_engine_behind_every_other_stage():
    cpu = load_settings(environ={})
    assert cpu.generator.engine_idle and cpu.generator.engine_nice == 0
    assert not load_settings(environ={"SERVEWISE_SERVE__PROFILE": "gpu"}).generator.engine_idle


def test_stream_chunks_thin_out_as_streams_grow():
    from serve.deployments import chunk_interval_s

    s = load_settings(environ={}).serve
    floor, rate = s.stream_interval_ms / 1000, s.stream_chunks_per_s
    assert chunk_interval_s(1, floor, rate) == chunk_interval_s(3, floor, rate) == 0.15
    assert chunk_interval_s(8, floor, rate) == pytest.approx(0.32)  # 25 chunks/s over 8 streams
    assert chunk_interval_s(16, floor, rate) == pytest.approx(0.64)
