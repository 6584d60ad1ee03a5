"""What ``keep doctor`` checks: for each file of the :mod:`keep.weights` registry, what uses it, and
whether the copy on disk is there, has the registered sha256 and loads strictly into that network.

Loading goes through the very loaders the commands use (``keep.api.load_model`` for KEEP,
``keep.face.detect.load_retinaface``, ``keep.face.parsing.load_parsenet``, ...), so "loads" means what
``keep restore`` / ``keep eval`` / ``keep train`` will do with the file: ``torch.load(weights_only=True)``,
the same unwrap of ``params_ema`` / ``params`` / ``module.``, the network built by the project's own
builder, ``strict=True``. A loaded network's values are also checked for NaN / inf, which no digest-less
file is otherwise checked for. Nothing here downloads.
"""
from __future__ import annotations

import gc
import importlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from keep.file_kind import FAILED_DOWNLOAD, NOT_A_CHECKPOINT, sniff
from keep.weights import WEIGHTS, WeightsNotFoundError, check_file, corrupt_hint, get_weight, sha256_of

Loader = Callable[[Path], "object"]   # path -> the network with the file loaded


def _keep_loader(config: Optional[str]) -> Loader:
    """``keep restore --weights NAME`` (config = the registry name's configuration) or ``--weights PATH``
    (config None: inferred from the file's keys, e.g. the Asian CFT scales)."""
    def load(path: Path):
        from keep.api import load_model
        return load_model(path, name=config, channels_last=False)
    return load


def _loader(module: str, function: str) -> Loader:
    """``module.function(path)``, imported when first used (``keep doctor --no-load`` imports no network)."""
    def load(path: Path):
        return getattr(importlib.import_module(module), function)(path)
    return load


def _vgg19(path: Path):
    # as keep.losses.perceptual.PerceptualLoss(pretrained=True) loads it: torchvision's VGG-19 layout
    from torchvision.models.vgg import cfgs, make_layers
    from keep.losses.perceptual import vgg19_features_state
    features = make_layers(cfgs["E"])
    features.load_state_dict(vgg19_features_state(path), strict=True)
    return features


def _torchvision(path: Path, arch: str):
    # as torchvision builds it for lpips (torchvision.models.<arch>(weights=...IMAGENET1K_V1)): strict
    import torch
    import torchvision
    net = getattr(torchvision.models, arch)()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net


def _vqgan(path: Path):
    # the stage I network of configs/stage1.yaml (VQGAN's defaults are that config's sizes)
    from keep.archs.vqgan import VQGAN
    from keep.checkpoint import load_checkpoint, load_state_dict_into
    state, _ = load_checkpoint(path)
    net = VQGAN()
    load_state_dict_into(net, state, source=str(path))
    return net


@dataclass(frozen=True)
class Use:
    needed_for: str      # which command (and option) reads the file
    load: Loader


#: Registry name -> what reads the file and how. ``tests/test_doctor.py`` checks every registered file
#: has an entry, so a file added to the registry without one fails there.
USES: Dict[str, Use] = {
    "keep-v1": Use("keep restore (default --weights)", _keep_loader("keep-v1")),
    "retinaface-resnet50": Use("keep restore (face detector)", _loader("keep.face.detect", "load_retinaface")),
    "parsenet": Use("keep restore (paste-back mask)", _loader("keep.face.parsing", "load_parsenet")),
    "realesrgan-x2": Use("keep restore --bg-upsampler / --face-upsample", _loader("keep.restore.upsampler", "load_rrdbnet")),
    "keep-v0.1": Use("keep restore --weights keep-v0.1", _keep_loader("keep-v0.1")),
    "keep-v1-asian": Use("keep restore --weights keep-v1-asian (unpublished)", _keep_loader("keep-v1-asian")),
    "arcface-resnet18": Use("keep eval (ids)", _loader("keep.metrics.identity", "load_arcface")),
    "i3d-kinetics400": Use("keep eval (fvd)", _loader("keep.metrics.fvd", "load_i3d")),
    "gmflow-sintel": Use("keep eval (flicker) / keep train stage II", _loader("keep.metrics.flicker", "load_gmflow")),
    "vgg19": Use("keep train (perceptual loss)", _vgg19),
    "lpips-alexnet": Use("keep eval (lpips) / keep train (validation lpips)", lambda p: _torchvision(p, "alexnet")),
    "lpips-vgg16": Use("keep train (lpips loss)", lambda p: _torchvision(p, "vgg16")),
    "codeformer-vqgan": Use("keep train stage I (optional init)", _vqgan),
}

# Which files a restore setup needs (and which it can do without) is keep.restore.needs.restore_needs,
# the list keep restore's own pre-flight check reads.


@dataclass
class FileReport:
    """One row of the report. ``problem``/``fix`` are set when the file is not usable as it is."""
    name: str                    # registry name, or "--weights" for a file given by path
    needed_for: str
    required: bool               # needed by the run being checked (exit status 1 when not usable)
    optional: str = ""           # read when present (then it must be usable); what the run does without it
    path: str = ""
    present: bool = False        # False also for a file that is no checkpoint (see ``content``)
    size_bytes: Optional[int] = None
    sha256: Optional[str] = None           # full digest of the file on disk
    expected_sha256: str = ""              # the registry's (a prefix for the release files); "" = none
    digest_state: str = "-"                # ok | sha256 mismatch | incomplete | no digest recorded | -
    load_state: str = "-"                  # ok | fails (keys, NaN) | error (cannot be read) | skipped | no loader | -
    load_detail: str = ""
    keys: Optional[int] = None             # state-dict entries of the loaded network
    missing_keys: Optional[int] = None
    unexpected_keys: Optional[int] = None
    wrong_shape_keys: Optional[int] = None
    problem: str = ""
    fix: str = ""
    notes: List[str] = field(default_factory=list)
    content: str = ""            # a file there that is no checkpoint: empty | html | text | unknown

    def as_dict(self) -> dict:
        return asdict(self)


# Both message formats a strict load failure comes in: keep.checkpoint.check_fits ("3 missing keys (a, b,
# c); 1 unexpected keys (d)") and torch's load_state_dict ('Missing key(s) in state_dict: "a", "b".').
_OURS = {kind: re.compile(rf"(\d+) {kind} keys") for kind in ("missing", "unexpected", "wrongly shaped")}
_TORCH = {"missing": re.compile(r"Missing key\(s\) in state_dict: (.*)"),
          "unexpected": re.compile(r"Unexpected key\(s\) in state_dict: (.*)")}


def key_counts(message: str) -> Dict[str, int]:
    """Counts of missing / unexpected / wrongly shaped keys in a strict-load error message ({} if none)."""
    counts = {}
    for kind, pattern in _OURS.items():
        found = pattern.search(message)
        if found:
            counts[kind] = int(found.group(1))
    if not counts:
        for kind, pattern in _TORCH.items():
            found = pattern.search(message)
            if found:
                counts[kind] = len(re.findall(r'"[^"]*"', found.group(1)))
        shaped = len(re.findall(r"size mismatch for ", message))
        if shaped:
            counts["wrongly shaped"] = shaped
    return counts


def _count_text(counts: Dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) + " keys"


def _non_finite(net) -> List[str]:
    """Names of floating tensors holding NaN or inf. A sum is finite only if every value is (a NaN or
    inf propagates), and it is ~30x faster than ``isfinite`` here; a non-finite sum (which may also be an
    overflow) is confirmed value by value."""
    return [k for k, v in net.state_dict().items() if v.is_floating_point() and not bool(v.sum().isfinite())
            and not bool(v.isfinite().all())]


def try_load(report: FileReport, load: Loader) -> None:
    """Load the file as its command does; record the outcome on ``report``."""
    import torch

    try:
        with torch.no_grad():
            net = load(Path(report.path))
    except Exception as err:  # whatever the loader raises is a finding about the file (pickle, zip, keys...)
        message = str(err).strip()
        counts = key_counts(message)
        if counts:
            report.load_state, report.load_detail = "fails", f"strict load: {_count_text(counts)}"
            report.missing_keys = counts.get("missing", 0)
            report.unexpected_keys = counts.get("unexpected", 0)
            report.wrong_shape_keys = counts.get("wrongly shaped", 0)
        else:
            # the whole reason, on one line (PyTorch's refusal of a pickle spans several sentences)
            report.load_state, report.load_detail = "error", " ".join(message.split())
        report.notes.append(" ".join(message.split()))
        return
    report.keys = len(net.state_dict())
    bad = _non_finite(net)
    if bad:
        report.load_state = "fails"
        report.load_detail = f"loads, but {len(bad)} tensors hold NaN or inf (e.g. {bad[0]})"
    else:
        report.load_state, report.load_detail = "ok", f"strict, {report.keys} keys"
    del net
    gc.collect()


def _hashed(report: FileReport) -> bool:
    """Size and full sha256 of the file on ``report``; False (and the problem recorded) if it cannot be read."""
    path = Path(report.path)
    try:
        report.size_bytes, report.sha256 = path.stat().st_size, sha256_of(path)
    except OSError as err:
        report.digest_state, report.problem = "unreadable", f"cannot be read ({err.strerror or err})"
        report.fix = f"check the permissions of {path} (or replace it with a good copy)"
        return False
    return True


def _digest_state(report: FileReport, name: Optional[str] = None, root: Optional[Path] = None) -> None:
    """``ok`` / ``sha256 mismatch`` against the expected digest (a prefix for the release files); without
    one, a registry file gets :func:`keep.weights.check_file`'s completeness check (``incomplete``)."""
    if report.expected_sha256:
        report.digest_state = "ok" if report.sha256.startswith(report.expected_sha256) else "sha256 mismatch"
        return
    status = check_file(name, root) if name else None
    report.digest_state = "incomplete" if status and status.state == "incomplete" else "no digest recorded"
    if status:
        report.notes.append(status.detail)


def _decide(report: FileReport, name: Optional[str], root: Optional[Path]) -> None:
    """Set ``problem`` and ``fix`` from the states (a digest-less file counts as verified once it loads)."""
    if not report.present:
        return
    redo = corrupt_hint(name, root) if name else "replace it with a good copy"
    if report.digest_state == "sha256 mismatch":
        report.problem = (f"sha256 mismatch: {report.sha256[:16]}... is not the registered {report.expected_sha256} "
                          f"(truncated, corrupt or another file)")
        report.fix = redo
    elif report.digest_state == "incomplete":
        report.problem = f"incomplete: {report.size_bytes:,} bytes and no end of archive (truncated)"
        report.fix = redo
    elif report.load_state in ("fails", "error"):
        report.problem = f"does not load into the network that uses it ({report.load_detail})"
        report.fix = ("it has the registered sha256, so this version of keep does not fit it: please report it "
                      "with the output of `keep doctor --json`" if report.digest_state == "ok" else redo)


def _not_a_checkpoint(report: FileReport, fix: str) -> bool:
    """An empty file or a saved HTML error page where a checkpoint should be does not count as present
    (a failed download leaves them); the report says what it is and ``fix`` what to do."""
    if not report.present:
        return False
    kind = sniff(report.path)
    if kind not in FAILED_DOWNLOAD:
        return False
    report.present, report.content = False, kind
    report.size_bytes = Path(report.path).stat().st_size
    report.problem, report.fix = f"the file there {NOT_A_CHECKPOINT[kind]}", fix
    return True


def check_registered(name: str, root: Optional[Path], required: bool, load: bool) -> FileReport:
    """Presence, sha256 and (``load``) strict load of registry file ``name`` under weights folder ``root``."""
    item = WEIGHTS[name]
    use = USES.get(name)
    path = item.path(root)
    report = FileReport(name=name, needed_for=use.needed_for if use else "?", required=required, path=str(path),
                        present=path.is_file(), expected_sha256=item.sha256)
    part = path.with_name(path.name + ".part")
    if part.is_file():
        report.notes.append(f"an interrupted download {part.name} is there; `keep download {name}` starts again")
    if _not_a_checkpoint(report, corrupt_hint(name, root)):
        return report
    if not report.present:
        report.digest_state = "-"
        report.problem = "missing"
        try:
            get_weight(name, download=False, root=root)
        except WeightsNotFoundError as err:
            report.fix = (f"run `keep download {name}` (offline: {err})" if item.published else str(err))
        return report
    if not _hashed(report):
        return report
    _digest_state(report, name, root)
    if use is None:
        report.load_state, report.load_detail = "no loader", "keep doctor does not know the network that uses it"
    elif load:
        try_load(report, use.load)
    else:
        report.load_state = "skipped"
    _decide(report, name, root)
    return report


def check_path(path: Path, load: bool) -> FileReport:
    """A KEEP checkpoint given by path (``keep restore --weights PATH``): its configuration is inferred
    from its keys as restore does; its sha256 is compared with a registered file of the same name."""
    same_name = [n for n, item in WEIGHTS.items() if item.filename == path.name]
    expected = WEIGHTS[same_name[0]].sha256 if same_name else ""
    report = FileReport(name="--weights", needed_for="keep restore --weights PATH", required=True,
                        path=str(path), present=path.is_file(), expected_sha256=expected)
    if _not_a_checkpoint(report, "give the path of the real checkpoint"):
        return report
    if not report.present:
        report.problem = "missing"
        from keep.api import RELEASE_CONFIGS
        report.fix = f"{path} is not a file: give the path of your KEEP checkpoint or one of {', '.join(RELEASE_CONFIGS)}"
        return report
    if not _hashed(report):
        return report
    _digest_state(report)
    if load:
        try_load(report, _keep_loader(None))
    else:
        report.load_state = "skipped"
    _decide(report, None, None)
    return report
