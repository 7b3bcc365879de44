"""Sharing through a DVC remote: the committed config, round trips, failure on a bad endpoint.

The round trips run the real pipeline (whatever stages dvc.yaml has) on a tiny config in a
copy of this working tree, push to a remote, clone, pull, and check that the clone is
complete: `dvc status` clean and `dvc repro` with nothing to run. The S3 one talks to
moto's S3 server on loopback (a real HTTP S3 protocol), the other one to a plain directory.
"""

from __future__ import annotations

import configparser
import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")

# Smallest settings under which every stage still has work to do: 3 clips per identity give
# 3 leakage groups, so train, val and test are all non-empty (2 leave val empty). Only keys that exist in
# params.yaml are overridden, so new sections and keys keep their own values.
TINY_PARAMS = {
    "sample": {"clips_per_identity": 3, "frames": 6, "size": 128},
    "extract_frames": {"frames_per_video": 3},
    "crop_faces": {"detect_long_side": 128, "crop_size": 64, "full_res_retry": False},
    "train": {"init": "random", "input_size": 32, "epochs": 1, "batch_size": 8, "num_workers": 0},
    "calibrate": {"batch_size": 16},
    "gradcam": {"max_videos": 2, "top_k": 1, "batch_size": 8},
}
PIPELINE_TIMEOUT_S = 1800


@pytest.fixture(scope="session")
def dvc_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder standing in for this machine's DVC and AWS configuration."""
    return tmp_path_factory.mktemp("dvc_home")


def dvc_env(home: Path, repo: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for dvc subprocesses, isolated from this machine's DVC and AWS set-up.

    Args:
        home: From the ``dvc_home`` fixture: where global/system config would be (empty).
        repo: Repository whose ``src/`` the stages import (a copy runs its own code).
        **extra: More variables.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # boto must not probe a cloud metadata service for credentials (slow, offline).
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(home / "aws_config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws_credentials"),
        DVC_NO_ANALYTICS="1",
        DVC_GLOBAL_CONFIG_DIR=str(home / "global"),
        DVC_SYSTEM_CONFIG_DIR=str(home / "system"),
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com",
    )
    if repo is not None:
        env["PYTHONPATH"] = str(repo / "src")
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on failure, show its output in the assertion."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n{output}")
    return proc


def copy_working_tree(dest: Path) -> None:
    """Copy this repo's tracked and untracked-but-not-ignored files (uncommitted work included)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in sorted(filter(None, listed)):
        src = REPO / rel
        if src.is_file():  # listed but deleted in the working tree: skip
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def tiny_params(path: Path) -> None:
    """Override the keys of :data:`TINY_PARAMS` that exist in ``path``, in place."""
    params = yaml.safe_load(path.read_text()) or {}
    for section, values in TINY_PARAMS.items():
        if isinstance(params.get(section), dict):
            for key, value in values.items():
                if key in params[section]:
                    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the committed configuration ---------------------------------------------------------


def test_committed_remote_config() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".dvc" / "config")
    assert cfg["core"]["analytics"] == "false" and cfg["core"]["check_update"] == "false"
    assert cfg["core"]["remote"] == "storage"
    storage = cfg["'remote \"storage\"'"]
    # A safe default: a local folder outside the repository, not a bucket someone else may own.
    assert "://" not in storage["url"] and storage["url"].startswith("../")
    text = (REPO / ".dvc" / "config").read_text()
    for secret in ("access_key_id", "secret_access_key", "session_token", "password"):
        assert f"{secret} =" not in text, f"{secret} belongs in .dvc/config.local, not .dvc/config"
    assert "/config.local" in (REPO / ".dvc" / ".gitignore").read_text().split()


@pytest.fixture
def small_repo(tmp_path: Path, dvc_home: Path) -> Path:
    """A DVC repo with the project's .dvc/config and one tracked file (nothing pushed yet)."""
    repo = tmp_path / "small"
    repo.mkdir()
    env = dvc_env(dvc_home)
    run(["git", "init", "-q"], repo, env)
    run([DVC, "init", "-q"], repo, env)
    shutil.copy2(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "blob.bin").write_bytes(os.urandom(4096))
    run([DVC, "add", "-q", "blob.bin"], repo, env)
    return repo


# The S3 settings docs/team.md tells a team to commit (bucket, timeouts); endpoint and keys
# are per machine. The tests put all of them in .dvc/config.local.
S3_REMOTE = {"url": "s3://team-bucket/dvc-cache", "connect_timeout": "10", "read_timeout": "30"}


def local_config(repo: Path, **options: str) -> None:
    """Write ``.dvc/config.local`` with options of the ``storage`` remote (what
    ``dvc remote modify --local storage KEY VALUE`` writes, without a dvc call per key),
    on top of :data:`S3_REMOTE`."""
    options = {**S3_REMOTE, **options}
    lines = ["['remote \"storage\"']", *(f"    {k} = {v}" for k, v in options.items())]
    (repo / ".dvc" / "config.local").write_text("\n".join(lines) + "\n")


def test_unreachable_endpoint_fails_in_bounded_time(small_repo: Path, dvc_home: Path) -> None:
    port = closed_port()
    env = dvc_env(dvc_home)
    local_config(small_repo, endpointurl=f"http://127.0.0.1:{port}", access_key_id="testing", secret_access_key="testing")
    start = time.monotonic()
    proc = run([DVC, "push"], small_repo, env, timeout=120, check=False)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert elapsed < 60, f"dvc push took {elapsed:.0f} s to give up"
    assert f"Could not connect to the endpoint URL: \"http://127.0.0.1:{port}/" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_hanging_endpoint_fails_on_read_timeout(small_repo: Path, dvc_home: Path) -> None:
    # A server that accepts connections and never answers: only read_timeout ends it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        env = dvc_env(dvc_home, AWS_MAX_ATTEMPTS="1")  # documented knob: no botocore retries
        port = server.getsockname()[1]
        local_config(small_repo, endpointurl=f"http://127.0.0.1:{port}", read_timeout="1",
                     access_key_id="testing", secret_access_key="testing")
        start = time.monotonic()
        proc = run([DVC, "push"], small_repo, env, timeout=180, check=False)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    assert proc.returncode != 0
    assert "Read timeout on endpoint URL" in proc.stderr, proc.stderr
    assert elapsed < 60, f"dvc push took {elapsed:.0f} s to give up"


# -- round trips ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory, dvc_home: Path) -> Path:
    """A copy of this working tree with the whole pipeline reproduced on tiny params, committed."""
    origin = tmp_path_factory.mktemp("origin")
    copy_working_tree(origin)
    tiny_params(origin / "params.yaml")
    env = dvc_env(dvc_home, origin)
    run(["git", "init", "-q"], origin, env)
    run(["git", "add", "."], origin, env)
    run(["git", "commit", "-q", "-m", "copy of the working tree, tiny params"], origin, env)
    run([DVC, "repro"], origin, env, timeout=PIPELINE_TIMEOUT_S)
    run(["git", "add", "."], origin, env)
    run(["git", "commit", "-q", "-m", "dvc repro"], origin, env)
    assert run(["git", "status", "--porcelain"], origin, env).stdout == ""
    return origin


def clone_and_check(origin: Path, dest: Path, configure: list[list[str]], dvc_home: Path) -> None:
    """Clone ``origin``, configure its remote, pull, and check nothing is missing or stale."""
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent, dvc_env(dvc_home))
    env = dvc_env(dvc_home, dest)
    for args in configure:
        run([DVC, *args], dest, env)
    assert not (dest / "models" / "model.pt").exists()  # data comes from the remote, not git
    run([DVC, "pull"], dest, env)
    status = run([DVC, "status", "--json"], dest, env)
    assert status.stdout.strip() in ("{}", ""), f"dvc status after pull: {status.stdout}"
    cloud = run([DVC, "status", "--cloud"], dest, env)
    assert "in sync" in cloud.stdout, cloud.stdout
    repro = run([DVC, "repro"], dest, env, timeout=PIPELINE_TIMEOUT_S)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "Data and pipelines are up to date." in repro.stdout, repro.stdout
    assert run(["git", "status", "--porcelain"], dest, env).stdout == ""


@pytest.fixture
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.mark.slow
def test_s3_round_trip(pipeline_repo: Path, s3_server: str, tmp_path: Path, dvc_home: Path) -> None:
    import boto3

    bucket, _, prefix = S3_REMOTE["url"].removeprefix("s3://").partition("/")
    # Explicit credentials and region: boto3 has nothing to look up (no metadata probe).
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket)
    # Only the endpoint and credentials are per machine: .dvc/config.local (git-ignored).
    local = [
        *(["remote", "modify", "--local", "storage", key, value] for key, value in S3_REMOTE.items()),
        ["remote", "modify", "--local", "storage", "endpointurl", s3_server],
        ["remote", "modify", "--local", "storage", "access_key_id", "testing"],
        ["remote", "modify", "--local", "storage", "secret_access_key", "testing"],
    ]
    (pipeline_repo / ".dvc" / "config.local").unlink(missing_ok=True)
    env = dvc_env(dvc_home, pipeline_repo)
    for args in local:
        run([DVC, *args], pipeline_repo, env)
    run([DVC, "push"], pipeline_repo, env)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert listed.get("KeyCount", 0) > 0
    assert run(["git", "status", "--porcelain"], pipeline_repo, env).stdout == ""  # config.local stays out of git
    clone_and_check(pipeline_repo, tmp_path / "clone", local, dvc_home)


@pytest.fixture(scope="module")
def directory_remote(pipeline_repo: Path, tmp_path_factory: pytest.TempPathFactory, dvc_home: Path) -> Path:
    """A shared-directory remote (as on NFS) holding ``pipeline_repo``'s data."""
    shared = tmp_path_factory.mktemp("nfs") / "dvc-cache"
    shared.mkdir()
    (pipeline_repo / ".dvc" / "config.local").unlink(missing_ok=True)
    env = dvc_env(dvc_home, pipeline_repo)
    run([DVC, *directory_remote_args(shared)], pipeline_repo, env)
    run([DVC, "push"], pipeline_repo, env)
    assert any(p.is_file() for p in shared.rglob("*"))
    return shared


def directory_remote_args(shared: Path) -> list[str]:
    return ["remote", "add", "--local", "--default", "shared", str(shared)]


@pytest.mark.slow
def test_directory_round_trip(pipeline_repo: Path, directory_remote: Path, tmp_path: Path, dvc_home: Path) -> None:
    clone_and_check(pipeline_repo, tmp_path / "clone", [directory_remote_args(directory_remote)], dvc_home)


@pytest.mark.slow
def test_experiment_from_clean_clone(pipeline_repo: Path, directory_remote: Path, tmp_path: Path, dvc_home: Path) -> None:
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(pipeline_repo), str(clone)], tmp_path, dvc_env(dvc_home))
    env = dvc_env(dvc_home, clone)
    run([DVC, *directory_remote_args(directory_remote)], clone, env)
    run([DVC, "pull"], clone, env)
    lr = yaml.safe_load((clone / "params.yaml").read_text())["train"]["lr"]
    new_lr = lr / 3
    run([DVC, "exp", "run", "-n", "tiny-lr", "-S", f"train.lr={new_lr}"], clone, env, timeout=PIPELINE_TIMEOUT_S)
    # dvclive (Live(dvcyaml=None)) must leave the pipeline definition alone.
    assert run(["git", "diff", "--name-only", "dvc.yaml"], clone, env).stdout == ""
    shown = run([DVC, "exp", "show", "--csv"], clone, env).stdout
    exp = next((r for r in csv.DictReader(io.StringIO(shown)) if r["Experiment"] == "tiny-lr"), None)
    assert exp is not None, shown
    assert float(exp["train.lr"]) == pytest.approx(new_lr)
    assert exp["coverage.scored"] not in ("", "-"), exp  # the experiment's metrics are listed
