"""Make ``reference_rrdbnet_arcface.npz`` and the two key manifests from the reference definitions.

Run once by hand (not by the tests), with the reference sources unpacked somewhere outside the
repository (nothing of them is copied here; they are imported from where they lie):

    pip download --no-deps basicsr==1.4.2 gfpgan==1.3.8      # PyPI: BasicSR's sdist, GFPGAN's wheel
    tar xzf basicsr-1.4.2.tar.gz; unzip -q gfpgan-1.3.8-py3-none-any.whl -d gfpgan_whl
    python tests/data/make_thirdparty_references.py basicsr-1.4.2 gfpgan_whl

RRDBNet comes from ``basicsr/archs/rrdbnet_arch.py`` (with its ``arch_util.py``: ``pixel_unshuffle``,
``make_layer``), the definition Real-ESRGAN and the KEEP release use; ArcFace from GFPGAN's
``gfpgan/archs/arcface_arch.py`` (``ResNetArcFace``, the file KEEP's release ships in its basicsr copy).
Only the package plumbing they import (BasicSR's registry, logger, compiled DCN op) is stubbed.
Weights: ``fill_state_dict(sd, seed)`` of ``../shared/conformance/fill.py`` (deterministic per key
name). Inputs: crops of frame 0 of ``../shared/videos/real_1.mp4`` (stored, so the tests also run
without the shared folder).
"""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared"
RRDB_SEED, ARCFACE_SEED = 3, 5
RRDB_CROP = (slice(200, 248), slice(130, 178))          # 48x48 around the left eye of real_1 frame 0
ARCFACE_BOX = (slice(130, 370), slice(74, 314))         # 240x240 face region, resized to 96x96 (INTER_AREA)


def _stub(name: str, **attrs) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__path__ = []          # importable as a package
    sys.modules[name] = module


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _reference_modules(basicsr_root: Path, gfpgan_root: Path):
    class _Registry:
        def register(self, obj=None):
            return obj if obj is not None else (lambda o: o)

    _stub("basicsr")
    _stub("basicsr.utils", get_root_logger=lambda *a, **k: None)
    _stub("basicsr.utils.registry", ARCH_REGISTRY=_Registry())
    _stub("basicsr.ops")
    _stub("basicsr.ops.dcn", ModulatedDeformConvPack=torch.nn.Module, modulated_deform_conv=None)
    _stub("basicsr.archs")
    _load("basicsr.archs.arch_util", basicsr_root / "basicsr/archs/arch_util.py")
    rrdb = _load("basicsr.archs.rrdbnet_arch", basicsr_root / "basicsr/archs/rrdbnet_arch.py")
    arcface = _load("gfpgan_arcface_arch", gfpgan_root / "gfpgan/archs/arcface_arch.py")
    return rrdb, arcface


def _manifest(net: torch.nn.Module, source: str) -> dict:
    return {"source": source, "keys": [[k, list(v.shape), str(v.dtype).replace("torch.", "")]
                                       for k, v in net.state_dict().items()]}


def main(basicsr_root: str, gfpgan_root: str) -> None:
    sys.path.insert(0, str(SHARED / "conformance"))
    from fill import fill_state_dict
    sys.path.insert(0, str(HERE.parents[1]))
    from keep.io import read_frames

    torch.set_num_threads(1)
    rrdb_mod, arc_mod = _reference_modules(Path(basicsr_root), Path(gfpgan_root))
    frame = read_frames(SHARED / "videos" / "real_1.mp4", max_frames=1)[0]      # (512, 388, 3) RGB

    rrdb = rrdb_mod.RRDBNet(3, 3, num_feat=64, num_block=23, num_grow_ch=32, scale=2).eval()
    rrdb.load_state_dict(fill_state_dict(rrdb.state_dict(), RRDB_SEED))
    rrdb_input = np.ascontiguousarray(frame[RRDB_CROP])
    with torch.no_grad():   # RealESRGANer's input: RGB, /255, (1, 3, H, W) float32
        rrdb_output = rrdb(torch.from_numpy(rrdb_input).permute(2, 0, 1)[None].float() / 255.0).numpy()

    arc = arc_mod.ResNetArcFace("IRBlock", [2, 2, 2, 2], use_se=False).eval()
    arc.load_state_dict(fill_state_dict(arc.state_dict(), ARCFACE_SEED))
    face = cv2.resize(np.ascontiguousarray(frame[ARCFACE_BOX]), (96, 96), interpolation=cv2.INTER_AREA)
    # GFPGAN's identity input (gfpgan_model.py, gray_resize_for_identity): RGB in [-1, 1], gray by the
    # BT.601 weights, bilinear resize to 128 (align_corners=False).
    rgb = torch.from_numpy(face).permute(2, 0, 1)[None].float() / 255.0 * 2 - 1
    gray = (0.2989 * rgb[:, 0] + 0.5870 * rgb[:, 1] + 0.1140 * rgb[:, 2]).unsqueeze(1)
    gray = torch.nn.functional.interpolate(gray, (128, 128), mode="bilinear", align_corners=False)
    with torch.no_grad():
        embedding = arc(gray).numpy()

    np.savez_compressed(HERE / "reference_rrdbnet_arcface.npz", rrdb_input=rrdb_input, rrdb_output=rrdb_output,
                        rrdb_seed=RRDB_SEED, arcface_face=face, arcface_gray=gray.numpy().astype(np.float16),
                        arcface_embedding=embedding, arcface_seed=ARCFACE_SEED)
    (HERE / "rrdbnet_x2_keys.json").write_text(json.dumps(_manifest(
        rrdb, "BasicSR 1.4.2 basicsr/archs/rrdbnet_arch.py RRDBNet(3, 3, num_feat=64, num_block=23, "
              "num_grow_ch=32, scale=2) (the definition of Real-ESRGAN and of the KEEP release)")))
    (HERE / "arcface_resnet18_keys.json").write_text(json.dumps(_manifest(
        arc, "GFPGAN 1.3.8 gfpgan/archs/arcface_arch.py ResNetArcFace(block='IRBlock', layers=[2, 2, 2, 2], "
             "use_se=False) (the file KEEP's release ships as basicsr/archs/arcface_arch.py)")))


if __name__ == "__main__":
    main(*sys.argv[1:3])
