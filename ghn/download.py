"""The download cache in `$GHN_HOME`: files fetched once from the first of their URLs that answers, checked against
their sha256 and kept with it, plus archives extracted once. Generic: nothing here knows what a GHN is (`ghn.hub` does).

Downloads follow huggingface_hub `file_download.py::_download_to_tmp_and_move`: a unique temp file beside the
target, a sha256 check, then an atomic rename, under a file lock. `GHN_OFFLINE=1` raises `OfflineError` instead of
reaching the network (`file://` URLs are still read).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

from ghn._config import ghn_home, is_offline
from ghn._io import atomic_directory, atomic_open, atomic_write_text
from ghn._logging import get_logger
from ghn.errors import CheckpointError, ConfigError, IntegrityError, MissingDependencyError, OfflineError
from ghn.registry import Registry

__all__ = [
    "URL_SCHEMES",
    "Fetcher",
    "cache_path",
    "download",
    "extract",
    "extract_once",
    "fetch",
    "fetch_hf",
    "file_sha256",
    "is_cached",
    "locked",
    "verify_sha256",
]

logger = get_logger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60


class Fetcher(Protocol):
    """Makes `dest` a copy of the file at `url` (checked against `sha256` when given); `size` is for progress bars."""

    def __call__(self, url: str, dest: Path, *, sha256: str | None, size: int | None, progress: bool) -> None: ...


#: How each URL scheme is fetched, by scheme name ('https', 'http', 'file').
URL_SCHEMES = Registry[Fetcher]("URL scheme")


# -- sha256 ------------------------------------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """The hex sha256 of the file at `path`, read in 1 MiB chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify_sha256(path: Path, expected: str, *, source: str, is_cache: bool = False) -> None:
    """Raise `IntegrityError` unless `path` has sha256 `expected`; a bad cache file (`is_cache`) is deleted.

    Raises:
        IntegrityError: the digests differ; the message names `source` and how to recover.
    """
    digest = file_sha256(path)
    if digest == expected:
        return
    if is_cache:
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        fix = "It was deleted; run again to download it afresh."
    else:
        fix = "Restore the file (e.g. git checkout pretrained/) or correct the expected digest."
    raise IntegrityError(f"{str(path)!r} (of {source!r}) has sha256 {digest} but {expected} was expected. {fix}")


def is_cached(path: Path, sha256: str | None = None) -> bool:
    """Whether `path` is cached; a cached file is re-verified before use, against `sha256` or the digest recorded
    when it was downloaded (a file placed by hand with neither gets its digest recorded now).

    Raises:
        IntegrityError: the cached file does not match (it is deleted).
    """
    if not path.is_file():
        return False
    recorded = _sidecar(path)
    expected = sha256 or (recorded.read_text().strip() if recorded.is_file() else None)
    if expected is None:
        atomic_write_text(recorded, file_sha256(path) + "\n")
    else:
        verify_sha256(path, expected, source=str(path), is_cache=True)
    logger.info("Cache hit: %s", path)
    return True


def _sidecar(path: Path) -> Path:
    """Where the sha256 of a cached file is recorded: '<file>.sha256' beside it."""
    return path.with_name(path.name + ".sha256")


# -- fetching ----------------------------------------------------------------------------------------------------------
def cache_path(url: str) -> Path:
    """Where the file at `url` is cached: `$GHN_HOME/url/<hash of the URL>/<file name>`, one folder per URL."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return ghn_home() / "url" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def fetch(
    urls: list[str], dest: Path, *, sha256: str | None = None, size: int | None = None, progress: bool = True
) -> Path:
    """Make `dest` a verified copy of the file at one of `urls` (the first that answers), unless it already is.

    Returns:
        `dest`.

    Raises:
        ConfigError: a URL's scheme is not in `URL_SCHEMES`.
        OfflineError: no URL answered (or `GHN_OFFLINE=1`); the message says where to put the file by hand.
        IntegrityError: the download or the cached file does not match `sha256`.
    """
    if is_cached(dest, sha256):
        return dest
    if not urls:
        raise OfflineError(f"No URL is known for {dest.name!r}. Put the file at {str(dest)!r} by hand.")
    errors: list[OfflineError] = []
    for url in urls:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in URL_SCHEMES:
            raise ConfigError(f"URL {url!r} has scheme {scheme!r}; ghn fetches {', '.join(URL_SCHEMES.names())}.")
        try:
            URL_SCHEMES.get(scheme)(url, dest, sha256=sha256, size=size, progress=progress)
            return dest
        except OfflineError as err:
            errors.append(err)
    raise errors[-1] if len(errors) == 1 else OfflineError(" ".join(str(e) for e in errors))


def download(url: str, dest: Path, *, sha256: str | None, size: int | None, progress: bool) -> None:
    """Download `url` to `dest` under a lock: a unique temp file beside it, sha256 checked, renamed in place.

    The digest is recorded in '<dest>.sha256' before the file is renamed in, so there is never a file without it.

    Raises:
        OfflineError: `GHN_OFFLINE=1` (for a non-file URL) or the network failed.
        IntegrityError: the download does not match `sha256`; it is not kept.
    """
    if is_offline() and urllib.parse.urlsplit(url).scheme != "file":
        raise OfflineError(
            f"GHN_OFFLINE=1, so {url!r} is not downloaded. Download it by hand and put it at {str(dest)!r}, "
            "or unset GHN_OFFLINE."
        )
    with locked(dest.with_name(dest.name + ".lock")):
        if is_cached(dest, sha256):  # another process finished it while we waited
            return
        with atomic_open(dest, suffix=".part") as file:
            digest = _stream(url, file, dest=dest, size=size, progress=progress)
            if sha256 is not None and digest != sha256:
                raise IntegrityError(
                    f"Download of {url!r} has sha256 {digest} but {sha256} was expected; it was not kept. "
                    "Retry, or check the URL and the expected digest."
                )
            atomic_write_text(_sidecar(dest), digest + "\n")
    logger.info("Downloaded %s to %s", url, dest)


def _stream(url: str, file: IO[bytes], *, dest: Path, size: int | None, progress: bool) -> str:
    """Stream `url` into `file`; returns the sha256. Network failures become `OfflineError` saying where to put it."""
    from tqdm import tqdm

    hasher = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or size
            show = progress and sys.stderr.isatty()
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not show) as bar:
                while chunk := response.read(_CHUNK):
                    file.write(chunk)
                    hasher.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise OfflineError(
            f"Cannot download {url!r} ({reason}). Check the connection and the URL, or download it by hand and put it "
            f"at {str(dest)!r}."
        ) from err
    return hasher.hexdigest()


URL_SCHEMES.register("https", download)
URL_SCHEMES.register("http", download)
URL_SCHEMES.register("file", download)


def fetch_hf(url: str) -> Path:
    """The local directory of 'hf://org/repo[/subdir]', fetched through `huggingface_hub` into `$GHN_HOME/hf`.

    Raises:
        ConfigError: the URL is malformed.
        MissingDependencyError: `huggingface_hub` is not installed.
        OfflineError: the Hub cannot be reached (or `GHN_OFFLINE=1` and nothing is cached).
    """
    parts = url.removeprefix("hf://").strip("/").split("/")
    if len(parts) < 2:
        raise ConfigError(f"Hugging Face source {url!r} is malformed. Write 'hf://org/repo' or 'hf://org/repo/subdir'.")
    repo, subdir = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise MissingDependencyError(
            f"Loading {url!r} needs 'huggingface_hub'. Install it with pip install 'ghn[hf]'."
        ) from err
    cache = ghn_home() / "hf"
    try:
        root = snapshot_download(
            repo, allow_patterns=[f"{subdir}/*"] if subdir else None, cache_dir=cache, local_files_only=is_offline()
        )
    except Exception as err:  # huggingface_hub raises many error types (offline, HTTP, missing repo)
        raise OfflineError(
            f"Cannot fetch {url!r} from the Hugging Face Hub ({err}). Check the connection and the repository, or "
            f"download the checkpoint directory by hand and load it by path (the cache is {str(cache)!r})."
        ) from err
    return Path(root) / subdir


# -- archives ----------------------------------------------------------------------------------------------------------
def extract_once(archive: Path, target: Path) -> Path:
    """`target` holding the contents of `archive`, extracted the first time only (atomically, under a lock).

    Raises:
        CheckpointError: the archive is corrupt or has members outside it.
    """
    if not target.is_dir():
        with locked(archive.with_name(archive.name + ".lock")):
            if not target.is_dir():
                with atomic_directory(target) as staging:
                    extract(archive, staging)
    return target


def extract(archive: Path, into: Path) -> None:
    """Extract a `.zip` or `.tar(.gz)` archive into directory `into`, refusing members that would land outside it.

    Raises:
        CheckpointError: the archive is corrupt or has an unsafe member.
    """
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if not (into / member).resolve().is_relative_to(into.resolve()):
                        raise CheckpointError(f"Archive {str(archive)!r} has a path outside it: {member!r}.")
                zf.extractall(into)
        else:
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                    tf.extractall(into, filter="data")  # refuses absolute paths, '..', links out and devices
                else:
                    for member in tf.getmembers():
                        inside = (into / member.name).resolve().is_relative_to(into.resolve())
                        if not inside or not (member.isfile() or member.isdir()):
                            raise CheckpointError(f"Archive {str(archive)!r} has an unsafe member {member.name!r}.")
                    tf.extractall(into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"Cannot extract {str(archive)!r} ({err}). Delete it and download it again.") from err


# -- locks -------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) so one process writes a file while others wait."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; temp file + rename still never expose a partial file
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
