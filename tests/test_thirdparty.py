"""Third-party networks against facts of their reference definitions (tests/data/README.md)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shared_material import CONFORMANCE, require

DATA = Path(__file__).resolve().parent / "data"


def _fill(state_dict, seed):
    import sys
    sys.path.insert(0, str(require(CONFORMANCE / "fill.py").parent))
    from fill import fill_state_dict
    return fill_state_dict(state_dict, seed)


def _keys(net):
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in net.state_dict().items()]


def test_rrdbnet_keys_and_output_match_basicsr():
    from keep.restore.upsampler import RRDBNet
    torch.set_num_threads(1)
    ref = np.load(DATA / "reference_rrdbnet_arcface.npz")
    net = RRDBNet().eval()
    assert _keys(net) == json.loads((DATA / "rrdbnet_x2_keys.json").read_text())["keys"]
    net.load_state_dict(_fill(net.state_dict(), int(ref["rrdb_seed"])))
    with torch.no_grad():
        out = net(torch.from_numpy(ref["rrdb_input"]).permute(2, 0, 1)[None].float() / 255.0).numpy()
    np.testing.assert_allclose(out, ref["rrdb_output"], atol=1e-4)   # fp32 kernels, 23 blocks


def test_arcface_keys_input_and_embedding_match_gfpgan():
    from keep.metrics.identity import ArcFaceResNet18, arcface_input
    ref = np.load(DATA / "reference_rrdbnet_arcface.npz")
    net = ArcFaceResNet18().eval()
    assert _keys(net) == json.loads((DATA / "arcface_resnet18_keys.json").read_text())["keys"]
    gray = arcface_input(ref["arcface_face"][None])
    np.testing.assert_allclose(gray.numpy(), ref["arcface_gray"].astype(np.float32), atol=1e-3)  # fp16 storage
    net.load_state_dict(_fill(net.state_dict(), int(ref["arcface_seed"])))
    with torch.no_grad():
        emb = net(gray).numpy()
    np.testing.assert_allclose(emb, ref["arcface_embedding"], rtol=1e-3, atol=1e-3)


def test_perceptual_loss_taps_pre_relu_features_of_torchvision_vgg19(tmp_path, monkeypatch):
    """Our loss with torchvision's file layout (features.* + classifier.*) equals an independent
    computation: torchvision's vgg19 with the same weights, conv outputs cloned by forward hooks
    (pre-ReLU, BasicSR's taps), ImageNet mean/std of torchvision's own weights enum."""
    import torch.nn.functional as F
    from torchvision.models import VGG19_Weights, vgg19
    from keep.losses.perceptual import VGG19_CONVS, PerceptualLoss
    torch.manual_seed(0)
    ref = vgg19(weights=None).eval()
    (tmp_path / "torchvision").mkdir()
    state = {k: v for k, v in ref.state_dict().items() if k.startswith("features.")}
    state["classifier.6.bias"] = torch.zeros(1000)          # the real file's extra keys are ignored
    torch.save(state, tmp_path / "torchvision" / "vgg19-dcbb9e9d.pth")
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path))
    loss = PerceptualLoss(pretrained=True)
    rng = np.random.default_rng(1)
    a, b = (torch.from_numpy(rng.random((1, 3, 64, 64), dtype=np.float32)) * 2 - 1 for _ in range(2))
    tfm = VGG19_Weights.IMAGENET1K_V1.transforms()
    mean, std = torch.tensor(tfm.mean).view(1, 3, 1, 1), torch.tensor(tfm.std).view(1, 3, 1, 1)

    def taps(x):
        out, hooks = {}, []
        for name, idx in VGG19_CONVS.items():
            hooks.append(ref.features[idx].register_forward_hook(lambda m, i, o, n=name: out.__setitem__(n, o.clone())))
        with torch.no_grad():
            ref.features(((x + 1) / 2 - mean) / std)
        for h in hooks:
            h.remove()
        return out

    fa, fb = taps(a), taps(b)
    expected = sum(w * F.l1_loss(fa[k], fb[k]) for k, w in loss.layer_weights.items())
    assert float(loss(a, b)) == pytest.approx(float(expected), rel=1e-5)
    assert (fa["conv1_2"] < 0).any()      # pre-ReLU taps have negative values: post-ReLU would not


def test_parsenet_mask_labels_follow_facexlib_colormap_and_input():
    """ParseMasker with facexlib's ParseNet (filled weights) on a real face equals facexlib's own
    paste-mask procedure: img2tensor(BGR/255, bgr2rgb) + normalize(0.5, 0.5), argmax, MASK_COLORMAP read
    from facexlib's source (not a copy), the two 101x101 blurs, 10 px border."""
    import ast
    import inspect
    import cv2
    from facexlib.parsing.parsenet import ParseNet
    from facexlib.utils import face_restoration_helper as helper
    from facexlib.utils.misc import img2tensor
    from torchvision.transforms.functional import normalize
    from shared_material import VIDEOS
    from keep.face.parsing import MASK_COLORMAP, ParseMasker
    from keep.io import read_frames
    torch.set_num_threads(1)
    tree = ast.parse(inspect.getsource(helper))
    colormap = next(ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    and getattr(n.targets[0], "id", "") == "MASK_COLORMAP")
    assert tuple(colormap) == MASK_COLORMAP
    frame = read_frames(require(VIDEOS / "real_1.mp4"), max_frames=1)[0]
    face = cv2.resize(np.ascontiguousarray(frame[100:420, 34:354]), (512, 512), interpolation=cv2.INTER_LINEAR)
    net = ParseNet(in_size=512, out_size=512, parsing_ch=19).eval()
    net.load_state_dict(_fill(net.state_dict(), 7))
    ours = ParseMasker(torch.device("cpu"), net=net)(face)
    x = img2tensor(cv2.cvtColor(face, cv2.COLOR_RGB2BGR).astype("float32") / 255.0, bgr2rgb=True, float32=True)
    normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), inplace=True)
    with torch.no_grad():
        labels = net(x[None])[0].argmax(dim=1).squeeze().numpy()
    mask = np.zeros(labels.shape)
    for idx, color in enumerate(colormap):
        mask[labels == idx] = color
    assert 0 < (mask > 0).mean() < 1       # both kept and dropped labels occur: the colormap matters
    mask = cv2.GaussianBlur(cv2.GaussianBlur(mask, (101, 101), 11), (101, 101), 11)
    mask[:10, :] = mask[-10:, :] = 0
    mask[:, :10] = mask[:, -10:] = 0
    np.testing.assert_allclose(ours, mask / 255.0, atol=1e-5)


def test_retinaface_release_layout_loads_and_detects_as_facexlib(tmp_path):
    """detection_Resnet50_Final.pth is a raw state dict with ``module.`` prefixes (facexlib's
    init_detection_model strips them): it loads strictly through our loader, and the loaded net gives
    facexlib's RetinaFace's raw outputs on a real frame, BGR minus facexlib's own mean_tensor."""
    import cv2
    from shared_material import VIDEOS
    from keep.face.detect import build_retinaface, load_retinaface
    from keep.io import read_frames
    torch.set_num_threads(1)
    ref = build_retinaface()
    ref.load_state_dict(_fill(ref.state_dict(), 13))
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "detection_Resnet50_Final.pth")
    ours = load_retinaface(tmp_path / "detection_Resnet50_Final.pth")
    frame = read_frames(require(VIDEOS / "real_1.mp4"), max_frames=1)[0][::2, ::2]
    bgr = torch.from_numpy(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR).astype(np.float32))
    x = bgr.permute(2, 0, 1)[None] - ref.mean_tensor
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
