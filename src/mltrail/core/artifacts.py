"""Artifact repositories: where a run's files live.

A repository is addressed by the run's ``artifact_uri``. The local directory repository is the
only one so far; the interface (write a file, write bytes, list, download) is what an object
store needs too. Every path a user gives is checked first (no absolute paths, no ``..``), and
every file is written to a temporary name and renamed into place, so a reader never sees a
half-written artifact.
"""

from __future__ import annotations

import abc
import os
import shutil
import tempfile
from urllib.parse import unquote, urlparse

from mltrail.core.entities import FileInfo
from mltrail.core.errors import InvalidValueError, NotFoundError, UnsupportedTrackingURIError
from mltrail.core.validation import validate_artifact_path


class ArtifactRepository(abc.ABC):
    """The files of one run."""

    @abc.abstractmethod
    def log_file(self, local_path: str, artifact_path: str = "") -> str:
        """Copy one file under ``artifact_path``; return its path relative to the run's root."""

    @abc.abstractmethod
    def log_dir(self, local_dir: str, artifact_path: str = "") -> None: ...

    @abc.abstractmethod
    def write_bytes(self, artifact_file: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def list(self, path: str = "") -> list[FileInfo]: ...

    @abc.abstractmethod
    def download(self, path: str, dst_dir: str) -> str: ...


class LocalArtifactRepository(ArtifactRepository):
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _resolve(self, rel: str) -> str:
        rel = validate_artifact_path(rel)
        full = os.path.abspath(os.path.join(self.root, rel)) if rel else self.root
        # Symlinks inside the artifact tree must not lead outside it either.
        if os.path.commonpath([os.path.realpath(full), os.path.realpath(self.root)]) != os.path.realpath(
            self.root
        ):
            from mltrail.core.errors import PathTraversalError

            msg = f"artifact path {rel!r} resolves outside the run's artifact root"
            raise PathTraversalError(msg)
        return full

    def log_file(self, local_path: str, artifact_path: str = "") -> str:
        if not os.path.isfile(local_path):
            msg = f"log_artifact: {local_path!r} is not a file (use log_artifacts for a directory)"
            raise InvalidValueError(msg)
        rel = validate_artifact_path(artifact_path)
        name = os.path.basename(local_path)
        target_rel = f"{rel}/{name}" if rel else name
        dst = self._resolve(target_rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = _tmp_beside(dst)
        try:
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, dst)
        except BaseException:
            _unlink(tmp)
            raise
        return target_rel

    def log_dir(self, local_dir: str, artifact_path: str = "") -> None:
        if not os.path.isdir(local_dir):
            msg = f"log_artifacts: {local_dir!r} is not a directory"
            raise InvalidValueError(msg)
        rel = validate_artifact_path(artifact_path)
        for dirpath, _dirs, files in os.walk(local_dir):
            sub = os.path.relpath(dirpath, local_dir)
            sub = "" if sub == "." else sub.replace(os.sep, "/")
            dest = "/".join(p for p in (rel, sub) if p)
            for name in sorted(files):
                self.log_file(os.path.join(dirpath, name), dest)

    def write_bytes(self, artifact_file: str, data: bytes) -> None:
        rel = validate_artifact_path(artifact_file, "artifact_file")
        if not rel:
            msg = "artifact_file must name a file, got an empty path"
            raise InvalidValueError(msg)
        dst = self._resolve(rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = _tmp_beside(dst)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dst)
        except BaseException:
            _unlink(tmp)
            raise

    def list(self, path: str = "") -> list[FileInfo]:
        full = self._resolve(path or "")
        if not os.path.isdir(full):
            return []
        rel = validate_artifact_path(path)
        out = []
        for name in sorted(os.listdir(full)):
            if name.startswith(".mltrail-tmp-"):
                continue
            child = os.path.join(full, name)
            child_rel = f"{rel}/{name}" if rel else name
            if os.path.isdir(child):
                out.append(FileInfo(child_rel, True, None))
            else:
                out.append(FileInfo(child_rel, False, os.path.getsize(child)))
        return out

    def download(self, path: str, dst_dir: str) -> str:
        src = self._resolve(path or "")
        if not os.path.exists(src):
            msg = f"no artifact {path!r} in {self.root}"
            raise NotFoundError(msg)
        os.makedirs(dst_dir, exist_ok=True)
        target = os.path.join(dst_dir, os.path.basename(src.rstrip("/")) if path else "")
        if os.path.isdir(src):
            target = target or dst_dir
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)
        return os.path.abspath(target)


def repository_for(artifact_uri: str) -> ArtifactRepository:
    if artifact_uri.startswith("file://"):
        return LocalArtifactRepository(unquote(urlparse(artifact_uri).path))
    if "://" in artifact_uri:
        msg = f"artifact location {artifact_uri!r}: only local directories are supported so far"
        raise UnsupportedTrackingURIError(msg)
    return LocalArtifactRepository(artifact_uri)


def _tmp_beside(dst: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix=".mltrail-tmp-", dir=os.path.dirname(dst))
    os.close(fd)
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
