"""A folder of clips restored in one process frees each clip's decoder and encoders when that clip
is done, not at some later garbage collection: a long batch must not hold every clip's codec
threads and buffers at once."""
import gc
import itertools

import av

from keep.cli import main
from keep.io import open_source
from keep.io.samples import write_sample_clip

from test_restore import VIDEOS, tiny_weights  # noqa: F401  (fixture)


def _open_containers():
    # type() not isinstance(): isinstance reads __class__, which some deprecated torch objects warn on
    kinds = (av.container.InputContainer, av.container.OutputContainer)
    return [o for o in gc.get_objects() if type(o) in kinds]


def test_each_clip_lets_go_of_its_codecs(tmp_path, tiny_weights):  # noqa: F811
    folder = tmp_path / "batch"
    folder.mkdir()
    with open_source(VIDEOS / "synthetic_1.mp4") as source:
        frames = [f.image for f in itertools.islice(source, 3)]
    for name in ("a", "b", "c"):
        write_sample_clip(frames, folder / f"{name}.mp4", tone_hz=None)
    gc.collect()
    before = len(_open_containers())
    gc.disable()   # what is freed must be freed by reference counting, as the run goes
    try:
        assert main(["restore", str(folder), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights),
                     "--aligned", "--window", "2", "--device", "cpu", "--no-progress", "--compare"]) == 0
        left = len(_open_containers()) - before
    finally:
        gc.enable()
    assert left == 0, f"{left} containers of finished clips still held"
