from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import pytest

from mltrail.core import environment as env
from mltrail.core.errors import InvalidValueError

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLTRAIL_CAPTURE_GIT", "MLTRAIL_CAPTURE_PACKAGES", "MLTRAIL_CAPTURE_ENTRY_POINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLTRAIL_CAPTURE_SYSTEM", raising=False)
    # The user's own git config must not change what the tests' git does.
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "src" / "train.py").write_text("print('training')\n")
    (root / "README.md").write_text("hello\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    git(root, "remote", "add", "origin", "https://ada:ghp_secret@github.com/org/proj.git")
    return root


def script_argv(repo: Path, *args: str) -> list[str]:
    return [str(repo / "src" / "train.py"), *args]


# --- capture_fast ----------------------------------------------------------------------------


def test_fast_capture_reads_git_system_and_entry_point(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the repository is found from the script, not the cwd
    argv = script_argv(repo, "--lr", "0.1")

    capture = env.capture_fast(argv=argv)

    assert capture.artifacts == {}
    tags = capture.tags
    assert tags[env.TAG_GIT_COMMIT] == git(repo, "rev-parse", "HEAD")
    assert tags[env.TAG_GIT_BRANCH] == "main"
    assert tags[env.TAG_GIT_REPO_URL] == "https://github.com/org/proj.git"  # no token
    assert tags[env.TAG_SOURCE_NAME] == str(repo / "src" / "train.py")
    assert json.loads(tags[env.TAG_ARGV]) == argv
    assert tags[env.TAG_PYTHON_VERSION] == "{}.{}.{}".format(*sys.version_info[:3])
    assert tags[env.TAG_HOST] == socket.gethostname()
    assert tags[env.TAG_PLATFORM].startswith(f"{os.uname().sysname}-{os.uname().release}")
    assert tags[env.TAG_USER]
    assert env.TAG_GIT_DIRTY not in tags  # needs git itself: the slow part


def test_fast_capture_runs_no_subprocess(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("capture_fast started a subprocess")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(os, "system", forbidden)
    env._platform.cache_clear()
    tags = env.capture_fast(argv=script_argv(repo)).tags
    assert tags[env.TAG_GIT_BRANCH] == "main"
    assert env.TAG_PLATFORM in tags


def test_commit_found_in_packed_refs(repo: Path) -> None:
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    tags = env.capture_fast(argv=script_argv(repo)).tags
    assert tags[env.TAG_GIT_COMMIT] == git(repo, "rev-parse", "HEAD")


def test_branch_with_a_slash(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature/faster")
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    tags = env.capture_fast(argv=script_argv(repo)).tags
    assert tags[env.TAG_GIT_BRANCH] == "feature/faster"
    assert tags[env.TAG_GIT_COMMIT] == git(repo, "rev-parse", "HEAD")


def test_detached_head_has_a_commit_and_no_branch(repo: Path) -> None:
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "checkout", "-q", "--detach", first)
    tags = env.capture_fast(argv=script_argv(repo)).tags
    assert tags[env.TAG_GIT_COMMIT] == first
    assert env.TAG_GIT_BRANCH not in tags


def test_unborn_branch_has_a_branch_and_no_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "trunk")
    tags = env.capture_fast(argv=["-c"], start_dir=str(tmp_path)).tags
    assert tags[env.TAG_GIT_BRANCH] == "trunk"
    assert env.TAG_GIT_COMMIT not in tags
    assert env.TAG_GIT_REPO_URL not in tags


def test_linked_worktree(repo: Path, tmp_path: Path) -> None:
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "experiment", str(worktree))
    git(worktree, "commit", "-q", "--allow-empty", "-m", "in the worktree")
    tags = env.capture_fast(argv=[str(worktree / "src" / "train.py")]).tags
    assert tags[env.TAG_GIT_BRANCH] == "experiment"
    assert tags[env.TAG_GIT_COMMIT] == git(worktree, "rev-parse", "HEAD")
    assert tags[env.TAG_GIT_REPO_URL] == "https://github.com/org/proj.git"


def test_the_branch_remote_is_preferred(repo: Path) -> None:
    git(repo, "remote", "add", "upstream", "git@github.com:up/proj.git")
    git(repo, "config", "branch.main.remote", "upstream")
    tags = env.capture_fast(argv=script_argv(repo)).tags
    assert tags[env.TAG_GIT_REPO_URL] == "git@github.com:up/proj.git"


def test_outside_a_repository_there_are_no_git_tags(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text("pass\n")
    tags = env.capture_fast(argv=[str(script)]).tags
    assert not any(key.startswith("mltrail.source.git") for key in tags)
    assert tags[env.TAG_SOURCE_NAME] == str(script)


@pytest.mark.parametrize("argv", [["-c", "x"], [""], [], ["missing_script.py"]])
def test_no_entry_point_without_a_script(argv: list[str]) -> None:
    capture = env.capture_fast(argv=argv, git=False)
    assert env.TAG_SOURCE_NAME not in capture.tags
    assert json.loads(capture.tags[env.TAG_ARGV]) == argv


def test_long_argv_stays_valid_json_under_the_limit() -> None:
    argv = ["train.py", *(f"--option-{i}=value" for i in range(2000))]
    text = env.capture_fast(argv=argv, git=False).tags[env.TAG_ARGV]
    assert len(text) <= env.ARGV_TAG_LIMIT
    kept = json.loads(text)
    assert kept[:-1] == argv[: len(kept) - 1]
    assert kept[-1] == f"... {len(argv) - (len(kept) - 1)} more arguments"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://ada:tok@github.com/org/p.git", "https://github.com/org/p.git"),
        ("https://ghp_token@github.com/org/p.git", "https://github.com/org/p.git"),
        ("https://github.com/org/p.git", "https://github.com/org/p.git"),
        ("ssh://git:pw@host:2222/p.git", "ssh://git@host:2222/p.git"),
        ("git@github.com:org/p.git", "git@github.com:org/p.git"),
        ("/srv/git/p.git", "/srv/git/p.git"),
    ],
)
def test_credentials_are_dropped_from_remote_urls(url: str, expected: str) -> None:
    assert env._without_credentials(url) == expected


def test_git_config_parsing() -> None:
    text = """
# a comment
[core]
\tbare = false
[remote "origin"]
\turl = "https://example.com/a b.git" ; trailing comment
\tfetch = +refs/heads/*:refs/remotes/origin/*
[Remote "Fork"]
\turl = git@example.com:me/a.git
[branch "feature/x"]
\tremote = Fork
\trebase
"""
    values = env._parse_git_config(text)
    assert values["remote.origin.url"] == "https://example.com/a b.git"
    assert values["remote.Fork.url"] == "git@example.com:me/a.git"
    assert values["branch.feature/x.remote"] == "Fork"
    assert values["branch.feature/x.rebase"] == "true"
    assert values["core.bare"] == "false"


def test_fast_capture_sees_a_new_commit_and_a_checkout(repo: Path) -> None:
    argv = script_argv(repo)
    first = env.capture_fast(argv=argv).tags
    assert env.capture_fast(argv=argv).tags == first  # nothing changed: the same answer
    (repo / "README.md").write_text("hello again\n")
    git(repo, "commit", "-q", "-am", "second")
    second = env.capture_fast(argv=argv).tags
    assert second[env.TAG_GIT_COMMIT] == git(repo, "rev-parse", "HEAD") != first[env.TAG_GIT_COMMIT]
    git(repo, "checkout", "-q", "-b", "feature/x")
    third = env.capture_fast(argv=argv).tags
    assert third[env.TAG_GIT_BRANCH] == "feature/x"
    git(repo, "pack-refs", "--all")  # the branch's ref file goes into packed-refs
    (repo / "README.md").write_text("on the branch\n")
    git(repo, "commit", "-q", "-am", "third")
    assert env.capture_fast(argv=argv).tags[env.TAG_GIT_COMMIT] == git(repo, "rev-parse", "HEAD")


def test_the_cached_slow_capture_runs_git_again_only_after_a_change(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = script_argv(repo)
    first = env.capture_slow_cached(argv=argv, packages=False)
    assert first.tags == {env.TAG_GIT_DIRTY: "false"}
    real_popen = subprocess.Popen
    started: list[object] = []

    def counting_popen(*args: object, **kwargs: object) -> object:
        started.append(args)
        return real_popen(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", counting_popen)
    assert env.capture_slow_cached(argv=argv, packages=False) is first
    assert started == []
    (repo / "README.md").write_text("hello\nstaged line\n")
    git(repo, "add", "README.md")  # the index changes
    staged = env.capture_slow_cached(argv=argv, packages=False)
    assert staged.tags == {env.TAG_GIT_DIRTY: "true"}
    assert "+staged line" in staged.artifacts[env.ARTIFACT_GIT_DIFF].decode()
    git(repo, "commit", "-q", "-m", "second")
    assert env.capture_slow_cached(argv=argv, packages=False).tags == {env.TAG_GIT_DIRTY: "false"}
    (repo / "src" / "train.py").write_text("print('training, edited')\n")  # the entry point
    edited = env.capture_slow_cached(argv=argv, packages=False)
    assert edited.artifacts["environment/entry_point/train.py"] == b"print('training, edited')\n"
    assert edited.tags == {env.TAG_GIT_DIRTY: "true"}


# --- capture_slow ---------------------------------------------------------------------------


def test_slow_capture_of_a_clean_repository(repo: Path) -> None:
    (repo / "outputs.txt").write_text("untracked output\n")  # untracked: not dirty
    capture = env.capture_slow(argv=script_argv(repo), packages=False)
    assert capture.tags == {env.TAG_GIT_DIRTY: "false"}
    assert env.ARTIFACT_GIT_DIFF not in capture.artifacts
    assert capture.artifacts["environment/entry_point/train.py"] == b"print('training')\n"


def test_slow_capture_of_a_dirty_repository(repo: Path) -> None:
    (repo / "README.md").write_text("hello\nchanged line\n")
    (repo / "staged.py").write_text("x = 1\n")
    git(repo, "add", "staged.py")
    capture = env.capture_slow(argv=script_argv(repo), packages=False, entry_point=False)
    assert capture.tags[env.TAG_GIT_DIRTY] == "true"
    diff = capture.artifacts[env.ARTIFACT_GIT_DIFF].decode()
    assert "+changed line" in diff
    assert "+x = 1" in diff  # staged changes are in the diff too
    assert list(capture.artifacts) == [env.ARTIFACT_GIT_DIFF]


def test_a_large_diff_is_cut_with_a_marker(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "SIZE_LIMIT", 2000)
    (repo / "README.md").write_text("".join(f"line {i}\n" for i in range(5000)))
    capture = env.capture_slow(argv=script_argv(repo), packages=False, entry_point=False)
    diff = capture.artifacts[env.ARTIFACT_GIT_DIFF]
    body, marker = diff.rsplit(b"\n# [mltrail:", 1)
    assert len(body) <= 2000
    assert marker == b" diff truncated at 2000 bytes]\n"
    assert body.startswith(b"diff --git a/README.md b/README.md")
    assert body.endswith(b"\n")  # cut at a line end


def test_a_large_entry_point_is_cut_with_a_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "SIZE_LIMIT", 100)
    script = tmp_path / "big.py"
    script.write_text("x = 1\n" * 100)
    capture = env.capture_slow(argv=[str(script)], packages=False, git=False)
    text = capture.artifacts["environment/entry_point/big.py"]
    assert text.startswith(b"x = 1\n")
    assert text.endswith(b"\n# [mltrail: entry point truncated at 100 bytes]\n")


def test_git_missing_is_quiet(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    (repo / "README.md").write_text("changed\n")
    capture = env.capture_slow(argv=script_argv(repo), packages=False, entry_point=False)
    assert capture == env.EnvironmentCapture({}, {})
    # The fast part does not need git at all.
    assert env.capture_fast(argv=script_argv(repo)).tags[env.TAG_GIT_BRANCH] == "main"


def test_not_a_repository_is_quiet(tmp_path: Path) -> None:
    capture = env.capture_slow(start_dir=str(tmp_path), argv=["-c"], packages=False)
    assert capture == env.EnvironmentCapture({}, {})


def test_a_broken_repository_is_quiet(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")  # nothing else
    fast = env.capture_fast(start_dir=str(tmp_path), argv=["-c"], system=False)
    assert fast.tags == {env.TAG_GIT_BRANCH: "main"}
    slow = env.capture_slow(start_dir=str(tmp_path), argv=["-c"], packages=False)
    assert slow.tags == {}


def test_requirements_list_installed_distributions() -> None:
    capture = env.capture_slow(git=False, entry_point=False, argv=["-c"])
    lines = capture.artifacts[env.ARTIFACT_REQUIREMENTS].decode().splitlines()
    assert f"pytest=={metadata.version('pytest')}" in lines
    assert f"psutil=={metadata.version('psutil')}" in lines
    assert lines == sorted(lines, key=str.lower)
    assert all(line.count("==") == 1 for line in lines)
    assert len({line.split("==")[0].lower() for line in lines}) == len(lines)
    assert env.installed_requirements() is env.installed_requirements()  # cached


# --- switches -----------------------------------------------------------------------------------


def test_env_switches_parts_off(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_CAPTURE_GIT", "false")
    monkeypatch.setenv("MLTRAIL_CAPTURE_PACKAGES", "0")
    monkeypatch.setenv("MLTRAIL_CAPTURE_ENTRY_POINT", "no")
    monkeypatch.setenv("MLTRAIL_CAPTURE_SYSTEM", "off")
    (repo / "README.md").write_text("changed\n")
    argv = script_argv(repo)
    assert env.capture_fast(argv=argv) == env.EnvironmentCapture({}, {})
    assert env.capture_slow(argv=argv) == env.EnvironmentCapture({}, {})


def test_keywords_win_over_env(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_CAPTURE_GIT", "false")
    tags = env.capture_fast(argv=script_argv(repo), git=True, system=False, entry_point=False).tags
    assert set(tags) == {env.TAG_GIT_COMMIT, env.TAG_GIT_BRANCH, env.TAG_GIT_REPO_URL}


def test_config_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.CaptureConfig.resolve() == env.CaptureConfig()
    monkeypatch.setenv("MLTRAIL_CAPTURE_PACKAGES", "FALSE")
    assert env.CaptureConfig.resolve() == env.CaptureConfig(packages=False)
    assert env.CaptureConfig.resolve(packages=True).packages is True


def test_a_bad_switch_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_CAPTURE_GIT", "sometimes")
    with pytest.raises(InvalidValueError, match=r"MLTRAIL_CAPTURE_GIT.*sometimes"):
        env.capture_fast(argv=["-c"])


# --- the background helper --------------------------------------------------------------------


def test_start_slow_capture_hands_the_result_over(repo: Path) -> None:
    results: list[env.EnvironmentCapture] = []
    thread = env.start_slow_capture(results.append, argv=script_argv(repo), packages=False)
    assert thread.name == "mltrail-environment" and thread.daemon
    thread.join(30)
    assert results == [env.capture_slow(argv=script_argv(repo), packages=False)]
    assert results[0].tags[env.TAG_GIT_DIRTY] == "false"


def test_start_slow_capture_swallows_a_failing_callback(repo: Path) -> None:
    called = threading.Event()

    def on_done(capture: env.EnvironmentCapture) -> None:
        called.set()
        raise RuntimeError("store is gone")

    env.start_slow_capture(on_done, git=False, packages=False, argv=["-c"]).join(30)
    assert called.is_set()


def test_merged_captures() -> None:
    fast = env.EnvironmentCapture({"a": "1", "b": "1"}, {})
    slow = env.EnvironmentCapture({"b": "2"}, {"x": b"y"})
    assert fast.merged(slow) == env.EnvironmentCapture({"a": "1", "b": "2"}, {"x": b"y"})
