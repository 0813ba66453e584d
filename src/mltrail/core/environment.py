"""Environment capture: where a run's code came from and what it ran on.

Recorded at run start in two parts, so that starting a run does not wait for git or for a
scan of the installed packages:

* :func:`capture_fast`, on the caller's thread: no subprocess, only a few small files read.
  Git commit, branch and remote straight from ``.git`` (HEAD, refs, packed-refs, config);
  Python version, platform, host, user; the entry-point script's path and ``argv``.
* :func:`capture_slow`, meant for a background thread (:func:`start_slow_capture`): the dirty
  flag and the diff from a ``git`` subprocess, the entry-point script's text, and the installed
  distributions as ``requirements.txt``.

Tags::

    mltrail.source.git.commit    mltrail.source.git.branch    mltrail.source.git.repoURL
    mltrail.source.git.dirty     "true" / "false": tracked files differ from HEAD
    mltrail.source.name          the entry-point script, absolute
    mltrail.python_version  mltrail.platform  mltrail.host  mltrail.user
    mltrail.argv                 JSON list

Artifacts: ``environment/git_diff.patch``, ``environment/entry_point/<script name>`` and
``environment/requirements.txt``; the first two are cut at 1 MiB with a marker.

Each part can be switched off by keyword or by env (``MLTRAIL_CAPTURE_GIT``,
``MLTRAIL_CAPTURE_PACKAGES``, ``MLTRAIL_CAPTURE_ENTRY_POINT``, ``MLTRAIL_CAPTURE_SYSTEM``
set to ``false``); see :class:`CaptureConfig`. Nothing here raises: what cannot be read is
left out and logged at debug level.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from mltrail.core.errors import InvalidValueError

logger = logging.getLogger("mltrail.environment")

TAG_GIT_COMMIT = "mltrail.source.git.commit"
TAG_GIT_BRANCH = "mltrail.source.git.branch"
TAG_GIT_REPO_URL = "mltrail.source.git.repoURL"
TAG_GIT_DIRTY = "mltrail.source.git.dirty"
TAG_SOURCE_NAME = "mltrail.source.name"
TAG_PYTHON_VERSION = "mltrail.python_version"
TAG_PLATFORM = "mltrail.platform"
TAG_HOST = "mltrail.host"
TAG_USER = "mltrail.user"
TAG_ARGV = "mltrail.argv"

ARTIFACT_GIT_DIFF = "environment/git_diff.patch"
ARTIFACT_ENTRY_POINT_DIR = "environment/entry_point"
ARTIFACT_REQUIREMENTS = "environment/requirements.txt"

#: Largest diff or entry-point script kept, in bytes; the rest is cut off with a marker.
SIZE_LIMIT = 1 << 20
#: Longest ``mltrail.argv`` tag value; later arguments are summarised.
ARGV_TAG_LIMIT = 5000
#: Seconds a git subprocess may take before it is killed.
GIT_TIMEOUT = 30.0

_ENV = {
    "git": "MLTRAIL_CAPTURE_GIT",
    "packages": "MLTRAIL_CAPTURE_PACKAGES",
    "entry_point": "MLTRAIL_CAPTURE_ENTRY_POINT",
    "system": "MLTRAIL_CAPTURE_SYSTEM",
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


@dataclass(frozen=True)
class EnvironmentCapture:
    """What one capture found: tags to set and artifacts (path -> content) to log."""

    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)

    def merged(self, other: EnvironmentCapture) -> EnvironmentCapture:
        """Return both captures in one; ``other`` wins where both have a key."""
        return EnvironmentCapture({**self.tags, **other.tags}, {**self.artifacts, **other.artifacts})


@dataclass(frozen=True)
class CaptureConfig:
    """Which parts of the environment to capture.

    Example:
        >>> CaptureConfig.resolve(packages=False).packages
        False
    """

    git: bool = True
    packages: bool = True
    entry_point: bool = True
    system: bool = True

    @classmethod
    def resolve(
        cls,
        *,
        git: bool | None = None,
        packages: bool | None = None,
        entry_point: bool | None = None,
        system: bool | None = None,
    ) -> CaptureConfig:
        """Each part from its keyword, else its ``MLTRAIL_CAPTURE_*`` variable, else on.

        Raises:
            InvalidValueError: a variable holds something other than true/false.
        """
        given = {"git": git, "packages": packages, "entry_point": entry_point, "system": system}
        return cls(**{part: _flag(part, value) for part, value in given.items()})


def _flag(part: str, value: bool | None) -> bool:
    if value is not None:
        return bool(value)
    name = _ENV[part]
    raw = os.environ.get(name, "").strip().lower()
    if not raw or raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    msg = f"{name} must be 'true' or 'false', got {os.environ[name]!r}"
    raise InvalidValueError(msg)


def capture_fast(
    *,
    git: bool | None = None,
    system: bool | None = None,
    entry_point: bool | None = None,
    argv: Sequence[str] | None = None,
    start_dir: str | None = None,
) -> EnvironmentCapture:
    """Capture the cheap part, on the caller's thread: no subprocess, no large reads.

    Args:
        git: commit, branch and remote URL read from ``.git``.
        system: Python version, platform, host, user and ``argv``.
        entry_point: the entry-point script's path as ``mltrail.source.name``.
        argv: the command line; default ``sys.argv``.
        start_dir: where to look for the repository; default the entry point's folder, else
            the working directory.

    Example:
        >>> "mltrail.python_version" in capture_fast(git=False).tags
        True
    """
    config = CaptureConfig.resolve(git=git, system=system, entry_point=entry_point)
    argv_key = tuple(sys.argv if argv is None else argv)
    key = (config, argv_key, start_dir, os.getcwd())
    known = _fast_cache.get(key)
    if known is None:
        # Per process and command line: the host, user, Python, script and repository.
        script = _entry_point(list(argv_key))
        base: dict[str, str] = {}
        if config.system:
            base.update(_system_tags(list(argv_key)))
        if config.entry_point and script is not None:
            base[TAG_SOURCE_NAME] = script
        known = _fast_cache[key] = (base, _repo_start(start_dir, script) if config.git else None)
    base, repo_start = known
    tags = dict(base)
    if repo_start is not None:  # the commit and branch may move: checked on every call
        _guarded(tags, lambda: _git_tags_cached(repo_start))
    return EnvironmentCapture(tags, {})


_fast_cache: dict[object, tuple[dict[str, str], str | None]] = {}


def capture_slow(
    *,
    git: bool | None = None,
    packages: bool | None = None,
    entry_point: bool | None = None,
    argv: Sequence[str] | None = None,
    start_dir: str | None = None,
) -> EnvironmentCapture:
    """Capture the costly part: meant to run off the caller's thread.

    Args:
        git: the dirty flag and the diff against HEAD (runs ``git``; quiet if git is missing
            or this is not a repository).
        packages: ``name==version`` of every installed distribution (cached per process).
        entry_point: the entry-point script's text.
        argv: the command line; default ``sys.argv``.
        start_dir: where to look for the repository, as in :func:`capture_fast`.
    """
    config = CaptureConfig.resolve(git=git, packages=packages, entry_point=entry_point)
    argv = list(sys.argv if argv is None else argv)
    script = _entry_point(argv)
    tags: dict[str, str] = {}
    artifacts: dict[str, bytes] = {}
    if config.git:
        _guarded(tags, lambda: _git_slow(_repo_start(start_dir, script), artifacts))
    if config.entry_point and script is not None:
        _guarded(tags, lambda: _read_entry_point(script, artifacts))
    if config.packages:
        _guarded(tags, lambda: artifacts.update({ARTIFACT_REQUIREMENTS: installed_requirements()}))
    return EnvironmentCapture(tags, artifacts)


_slow_cache: tuple[object, EnvironmentCapture] | None = None
_slow_lock = threading.Lock()


def capture_slow_cached(**options: object) -> EnvironmentCapture:
    """:func:`capture_slow`, taken again only when what it reads may have changed.

    A process that starts many runs (a script fitting a hundred models) runs ``git`` once,
    not once per run. The capture is taken again when the commit checked out, git's index
    (``git add``), the entry-point script or the options change. Edits to tracked files that
    were not added show in the next process's capture, as the code a process runs is the code
    it imported. Options are :func:`capture_slow`'s.
    """
    global _slow_cache
    key = _slow_key(options)
    with _slow_lock:  # one capture at a time: two runs starting together run git once
        cached = _slow_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        captured = capture_slow(**options)  # type: ignore[arg-type]
        _slow_cache = (key, captured)
        return captured


def _slow_key(options: dict[str, object]) -> object:
    config = CaptureConfig.resolve(
        git=options.get("git"),  # type: ignore[arg-type]
        packages=options.get("packages"),  # type: ignore[arg-type]
        entry_point=options.get("entry_point"),  # type: ignore[arg-type]
    )
    argv = options.get("argv")
    argv = list(sys.argv if argv is None else argv)  # type: ignore[call-overload]
    script = _entry_point(argv)
    start = _repo_start(options.get("start_dir"), script)  # type: ignore[arg-type]
    git_state: object = None
    if config.git:
        repo = _cached_repo(start)
        if repo is not None:
            index = _inode_stamp(os.path.join(repo.git_dir, "index"))
            git_state = (tuple(sorted(_git_tags_cached(start).items())), index)
    return (config, tuple(argv), start, git_state, _inode_stamp(script) if script else None)


def start_slow_capture(on_done: Callable[[EnvironmentCapture], None], **options: object) -> threading.Thread:
    """Run :func:`capture_slow` on a daemon thread and hand the result to ``on_done``.

    ``options`` are :func:`capture_slow`'s keywords. A failure of ``on_done`` is logged at
    debug level. Join the returned thread to wait for it (``end_run`` should, briefly).
    """

    def run() -> None:
        try:
            on_done(capture_slow(**options))  # type: ignore[arg-type]
        except Exception:
            logger.debug("background environment capture failed", exc_info=True)

    thread = threading.Thread(target=run, name="mltrail-environment", daemon=True)
    thread.start()
    return thread


def _guarded(tags: dict[str, str], read: Callable[[], dict[str, str] | None]) -> None:
    try:
        found = read()
    except Exception:
        logger.debug("environment capture step failed", exc_info=True)
        return
    if found:
        tags.update(found)


# --- system -------------------------------------------------------------------------------------


def _system_tags(argv: list[str]) -> dict[str, str]:
    tags = {
        TAG_PYTHON_VERSION: "{}.{}.{}".format(*sys.version_info[:3]),
        TAG_PLATFORM: _platform(),
        TAG_HOST: socket.gethostname(),
        TAG_ARGV: _argv_json(argv),
    }
    user = _user()
    if user:
        tags[TAG_USER] = user
    return tags


@functools.lru_cache(maxsize=1)
def _platform() -> str:
    # Not platform.platform(): on POSIX it runs `uname -p` in a subprocess.
    if not hasattr(os, "uname"):
        import platform

        return platform.platform()
    uname = os.uname()
    text = f"{uname.sysname}-{uname.release}-{uname.machine}"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (ValueError, OSError):
        libc = None
    return f"{text}-with-{libc.replace(' ', '')}" if libc else text


def _user() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):  # a uid with no name; no pwd module
        return None


def _argv_json(argv: list[str]) -> str:
    text = json.dumps(argv)
    if len(text) <= ARGV_TAG_LIMIT:
        return text
    # Keep it valid JSON: as many leading arguments as fit, then a note of what was left out.
    kept: list[str] = []
    for arg in argv:
        note = f"... {len(argv) - len(kept)} more arguments"
        if len(json.dumps([*kept, arg, note])) > ARGV_TAG_LIMIT:
            break
        kept.append(arg)
    return json.dumps([*kept, f"... {len(argv) - len(kept)} more arguments"])


# --- entry point --------------------------------------------------------------------------------


def _entry_point(argv: list[str]) -> str | None:
    """The script that was run, absolute; ``None`` for ``python -c``, a REPL, a missing file."""
    if not argv or not argv[0] or argv[0] in ("-c", "-m", "-"):
        return None
    path = os.path.abspath(argv[0])
    return path if os.path.isfile(path) else None


def _read_entry_point(script: str, artifacts: dict[str, bytes]) -> None:
    with open(script, "rb") as file:
        text = file.read(SIZE_LIMIT + 1)
    name = f"{ARTIFACT_ENTRY_POINT_DIR}/{os.path.basename(script)}"
    artifacts[name] = _cut(text, "entry point")


def _cut(data: bytes, what: str) -> bytes:
    if len(data) <= SIZE_LIMIT:
        return data
    head = data[:SIZE_LIMIT]
    newline = head.rfind(b"\n")
    if newline > 0:
        head = head[: newline + 1]
    marker = f"\n# [mltrail: {what} truncated at {SIZE_LIMIT} bytes]\n"
    return head + marker.encode()


# --- packages -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def installed_requirements() -> bytes:
    """Every installed distribution as ``name==version`` lines, sorted; cached per process.

    Read with :mod:`importlib.metadata`, no subprocess. Where one name is installed twice,
    the first on ``sys.path`` wins, as at import.
    """
    from importlib import metadata

    found: dict[str, str] = {}
    for dist in metadata.distributions():
        try:
            name, version = dist.metadata["Name"], dist.version
        except (OSError, ValueError, KeyError, TypeError):  # broken metadata: leave it out
            continue
        if not name or not version:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key not in found:
            found[key] = f"{name}=={version}"
    lines = sorted(found.values(), key=str.lower)
    return "".join(line + "\n" for line in lines).encode()


# --- git: read from .git ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Repo:
    root: str  # the work tree
    git_dir: str  # HEAD lives here (a worktree's own folder for linked worktrees)
    common_dir: str  # refs, packed-refs and config live here


def _repo_start(start_dir: str | None, script: str | None) -> str:
    if start_dir is not None:
        return start_dir
    return os.path.dirname(script) if script is not None else os.getcwd()


def _find_repo(start: str) -> _Repo | None:
    """The git repository holding ``start``, found by walking up to a ``.git``."""
    import stat

    path = os.path.abspath(start)
    while True:
        dotgit = os.path.join(path, ".git")
        try:
            mode = os.stat(dotgit).st_mode
        except OSError:
            mode = 0
        git_dir: str | None = None
        if stat.S_ISDIR(mode):
            git_dir = dotgit
        elif stat.S_ISREG(mode):  # a linked worktree or a submodule: "gitdir: <path>"
            content = _read_small(dotgit) or ""
            if content.startswith("gitdir:"):
                git_dir = os.path.normpath(os.path.join(path, content[7:].strip()))
        if git_dir is not None and os.path.isfile(os.path.join(git_dir, "HEAD")):
            common = _read_small(os.path.join(git_dir, "commondir"))
            common_dir = os.path.normpath(os.path.join(git_dir, common.strip())) if common else git_dir
            return _Repo(path, git_dir, common_dir)
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


_git_cache: dict[str, tuple[tuple[str, ...], object, dict[str, str]]] = {}  # start -> (files, stamps, tags)
_repos: dict[str, _Repo | None] = {}  # start -> its repository, found once


def _git_tags_cached(start: str) -> dict[str, str]:
    """:func:`_git_tags`, read again only when HEAD or the branch's ref file has changed.

    Starting a run stats two files instead of walking up to ``.git`` and reading and parsing
    three. git writes HEAD and refs through a lock file that is renamed into place, so a
    checkout or a new commit changes a file's inode or modification time (a branch whose ref
    lives only in packed-refs gets a loose ref file with its next commit).
    """
    cached = _git_cache.get(start)
    if cached is not None:
        files, stamps, tags = cached
        if tuple(map(_inode_stamp, files)) == stamps:
            return tags
    repo = _cached_repo(start)
    if repo is None:
        return {}
    tags = _git_tags(start)
    files = (os.path.join(repo.git_dir, "HEAD"),)
    branch = tags.get(TAG_GIT_BRANCH)
    if branch:
        files += (os.path.join(repo.common_dir, "refs", "heads", *branch.split("/")),)
    _git_cache[start] = (files, tuple(map(_inode_stamp, files)), tags)
    return tags


def _cached_repo(start: str) -> _Repo | None:
    """:func:`_find_repo`, walked once per start folder and process."""
    if start not in _repos:
        _repos[start] = _find_repo(start)
    return _repos[start]


def _inode_stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _git_tags(start: str) -> dict[str, str]:
    repo = _find_repo(start)
    if repo is None:
        return {}
    tags: dict[str, str] = {}
    head = (_read_small(os.path.join(repo.git_dir, "HEAD")) or "").strip()
    branch: str | None = None
    commit: str | None = None
    if head.startswith("ref:"):
        ref = head[4:].strip()
        if ref.startswith("refs/heads/"):
            branch = ref[len("refs/heads/") :]
        commit = _resolve_ref(repo, ref)
    elif _SHA.fullmatch(head):
        commit = head  # detached HEAD
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    if branch:
        tags[TAG_GIT_BRANCH] = branch
    url = _remote_url(repo, branch)
    if url:
        tags[TAG_GIT_REPO_URL] = url
    return tags


def _resolve_ref(repo: _Repo, ref: str, depth: int = 0) -> str | None:
    if depth > 5:
        return None
    for base in (repo.git_dir, repo.common_dir):
        content = _read_small(os.path.join(base, *ref.split("/")))
        if content is None:
            continue
        content = content.strip()
        if content.startswith("ref:"):
            return _resolve_ref(repo, content[4:].strip(), depth + 1)
        return content if _SHA.fullmatch(content) else None
    return _packed_ref(repo.common_dir, ref)


def _packed_ref(common_dir: str, ref: str) -> str | None:
    suffix = " " + ref
    try:
        with open(os.path.join(common_dir, "packed-refs"), encoding="utf-8", errors="replace") as f:
            for line in f:  # streamed: packed-refs can be large in big repositories
                line = line.rstrip("\n")
                if line.endswith(suffix) and not line.startswith(("#", "^")):
                    sha = line[: -len(suffix)]
                    return sha if _SHA.fullmatch(sha) else None
    except OSError:
        pass
    return None


def _remote_url(repo: _Repo, branch: str | None) -> str | None:
    config = _read_small(os.path.join(repo.common_dir, "config"))
    if not config:
        return None
    values = _parse_git_config(config)
    remotes = [
        key[len("remote.") : -len(".url")]
        for key in values
        if key.startswith("remote.") and key.endswith(".url")
    ]
    if not remotes:
        return None
    preferred = values.get(f"branch.{branch}.remote") if branch else None
    name = next((r for r in (preferred, "origin") if r in remotes), remotes[0])
    return _without_credentials(values[f"remote.{name}.url"])


_SECTION = re.compile(r'\[\s*([A-Za-z0-9.-]+)(?:\s+"((?:[^"\\]|\\.)*)")?\s*\]')
_UNESCAPE = re.compile(r"\\(.)")
_ENTRY = re.compile(r"([A-Za-z][A-Za-z0-9-]*)\s*(?:=\s*(.*))?$")


def _parse_git_config(text: str) -> dict[str, str]:
    """The ``section.subsection.key`` values of a git config file; first one of a key wins.

    Enough of git's format for remotes and branches: sections with quoted subsections,
    ``key = value`` with quotes and comments. Includes are not followed.
    """
    values: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            match = _SECTION.match(line)
            if match is None:
                section = ""
                continue
            name, sub = match.group(1).lower(), match.group(2)
            # Subsection names are case-sensitive and keep their escaped characters.
            section = name if sub is None else name + "." + _UNESCAPE.sub(r"\1", sub)
            continue
        match = _ENTRY.match(line)
        if match is None or not section:
            continue
        key = f"{section}.{match.group(1).lower()}"
        values.setdefault(key, _config_value(match.group(2) or "true"))
    return values


def _config_value(raw: str) -> str:
    out: list[str] = []
    quoted = False
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == '"':
            quoted = not quoted
        elif char == "\\" and i + 1 < len(raw):
            i += 1
            out.append({"n": "\n", "t": "\t", "b": "\b"}.get(raw[i], raw[i]))
        elif char in "#;" and not quoted:
            break
        else:
            out.append(char)
        i += 1
    return "".join(out).strip()


def _without_credentials(url: str) -> str:
    """Drop a password or token from a remote URL (``https://user:token@host/...``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or "@" not in parts.netloc:
        return url  # scp-like "git@host:org/repo.git" carries no secret
    userinfo, host = parts.netloc.rsplit("@", 1)
    if parts.scheme in ("http", "https"):
        netloc = host  # a token is often the user name itself
    else:
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"  # ssh://git@host: the user is no secret
    return urlunsplit(parts._replace(netloc=netloc))


def _read_small(path: str, limit: int = 64 * 1024) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read(limit)
    except OSError:
        return None


# --- git: the subprocess part ----------------------------------------------------------------


def _git_slow(start: str, artifacts: dict[str, bytes]) -> dict[str, str]:
    repo = _find_repo(start)
    executable = shutil.which("git")
    if repo is None or executable is None:
        return {}
    tags: dict[str, str] = {}
    if TAG_GIT_COMMIT not in _git_tags(start):
        # A ref format we do not read (reftable): ask git. Fails quietly on an unborn branch.
        head = _run_git(executable, repo.root, ["rev-parse", "--verify", "-q", "HEAD"])
        if head is not None and _SHA.fullmatch(head[0].decode().strip()):
            tags[TAG_GIT_COMMIT] = head[0].decode().strip()
    # Untracked files are left out: outputs (mltrail-runs/ among them) would mark every
    # run dirty, and the diff could not show them anyway.
    status = _run_git(executable, repo.root, ["status", "--porcelain", "--untracked-files=no"])
    if status is None:
        return tags
    dirty = bool(status[0].strip())
    tags[TAG_GIT_DIRTY] = "true" if dirty else "false"
    if dirty:
        diff = _run_git(
            executable,
            repo.root,
            ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "HEAD"],
            limit=SIZE_LIMIT,
        )
        if diff is not None and diff[0]:
            data, complete = diff
            artifacts[ARTIFACT_GIT_DIFF] = data if complete else _cut(data, "diff")
    return tags


def _run_git(
    executable: str, cwd: str, args: list[str], limit: int = SIZE_LIMIT
) -> tuple[bytes, bool] | None:
    """Run git; return (at most ``limit`` + 1 bytes of stdout, whether that is all of it).

    ``None`` when git fails or takes longer than :data:`GIT_TIMEOUT`.
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        process = subprocess.Popen(
            # --no-optional-locks: never take index.lock under a git command of the user's.
            [executable, "--no-optional-locks", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        logger.debug("cannot run git", exc_info=True)
        return None
    timer = threading.Timer(GIT_TIMEOUT, process.kill)
    timer.daemon = True
    timer.start()
    try:
        assert process.stdout is not None
        data = process.stdout.read(limit + 1)
        complete = len(data) <= limit
        if not complete:
            process.kill()  # the rest would be cut off anyway
        process.stdout.close()
        returncode = process.wait()
    finally:
        timer.cancel()
    if complete and returncode != 0:
        logger.debug("git %s exited with %s", " ".join(args), returncode)
        return None
    return data, complete
