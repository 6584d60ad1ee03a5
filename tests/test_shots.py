"""Shot boundaries (keep/face/shots.py) on a labelled set made from ../shared/videos (tests/shot_clips.py):
hard cuts, dissolves, fades through black and white; flashes, a fast pan and a zoom that are no cut."""
import numpy as np
import pytest

from keep.face.shots import ShotDetector, Shots, find_cuts, read_cut_list

import shot_clips


@pytest.fixture(scope="module")
def labelled():
    return shot_clips.labelled_set()


def test_precision_and_recall_on_the_labelled_set(labelled):
    scores = {clip.name: shot_clips.match(find_cuts(clip.frames), clip.boundaries) for clip in labelled}
    precision, recall = shot_clips.precision_recall(scores)
    assert sum(len(c.boundaries) for c in labelled) == 14
    # measured: 1.00 / 1.00 (docs/restore.md, "Edited footage")
    assert precision >= 0.9 and recall >= 0.9, scores
    # the clips with no boundary (flashes inside shots, a fast pan across two people, a zoom) give none
    for clip in labelled:
        if clip.name in ("fast pan", "zoom"):
            assert scores[clip.name] == (0, 0, 0)
    assert scores["flashes"] == (1, 0, 0)


def test_causal_detection_finds_hard_cuts_at_once_and_no_flash_twice(labelled):
    clip = next(c for c in labelled if c.name == "hard cuts")
    detector = ShotDetector(causal=True)
    for index, image in enumerate(clip.frames):
        found = detector.push(image)
        assert detector.settled == index + 1          # no look-ahead
        assert found == ([index] if (index, index) in clip.boundaries else [])


def test_streaming_annotation_holds_frames_only_until_decided_and_equals_the_whole_clip(labelled):
    clip = next(c for c in labelled if c.name == "fades")
    shots = Shots("auto")
    pulled = []

    def frames():
        for k, image in enumerate(clip.frames):
            pulled.append(k)
            yield image
    out = []
    for image, cut in shots.annotate(frames(), image_of=lambda f: f):
        out.append(cut)
        # a frame comes out at most the detector's look-ahead plus a merge window after it went in
        assert len(pulled) - len(out) <= 2 * shots.detector.lookahead + shots.detector.s.merge + 2
    assert len(out) == len(clip.frames)
    assert [k for k, cut in enumerate(out) if cut] == shots.cuts == find_cuts(clip.frames)


def test_cut_list_file(tmp_path):
    path = tmp_path / "cuts.txt"
    path.write_text("# from PySceneDetect\n30\n 12, 0\n75 # a dissolve\n")
    assert read_cut_list(path) == [12, 30, 75]
    shots = Shots(str(path))
    frames = [np.zeros((4, 4, 3), np.uint8)] * 40
    assert [k for k, (_, cut) in enumerate(shots.annotate(frames, image_of=lambda f: f)) if cut] == [12, 30]
    path.write_text("12\nabc\n")
    with pytest.raises(ValueError, match="cuts.txt:2: 'abc' is not a frame number"):
        read_cut_list(path)


def test_live_resets_after_a_dissolve_once_it_is_known():
    """Causal (live) detection sees a dissolve only once it is over: the look-ahead detector running
    beside it resets the state then (a late boundary), instead of carrying the first shot's state
    through the whole second shot. Without it the causal detector finds nothing here."""
    a, b = shot_clips.piece("real_1", 0, 70), shot_clips.piece("real_2", 40, 80)
    length = 10
    frames = a[:-length] + [shot_clips._mix(x, y, (j + 1) / (length + 1))
                            for j, (x, y) in enumerate(zip(a[-length:], b[:length]))] + b[length:]
    first, last = len(a) - length, len(a)          # the dissolve's frames, then the new shot's
    causal_only = Shots("auto", causal=True)
    causal_only.late = None
    shots = Shots("auto", causal=True)
    resets = [k for k, image in enumerate(frames) if shots.push(image)]
    assert not any(causal_only.push(image) for image in frames)
    assert len(resets) == 1 and shots.cuts == resets
    (at, reset), = shots.late_cuts
    assert first <= at <= last and reset == resets[0]
    # known within the look-ahead (and its non-maximum suppression window) after the dissolve
    assert last < reset <= last + 2 * shots.late.lookahead + shots.late.s.merge
    assert find_cuts(frames) == [at]                 # where the offline detector puts it
