"""Shot boundaries: hard cuts, dissolves and fades, not fooled by flashes, fast pans or zooms.

A boundary ends every face track (no tracking, gap filling, smoothing or network state across it),
so a shot inside a video comes out as if it had been cut out and restored alone. Everything runs on
a 48x64 thumbnail of each frame; ``D`` is the Bhattacharyya distance of 16x8 hue-saturation
histograms (brightness left out, so fades and flashes barely move it; within the shared clips'
shots consecutive frames give <= 0.16, frames 3 apart <= 0.19).

* **hard cut** at frame t: ``d_t = D(t-1, t)`` is large (``hard``) and ``ratio`` times the recent
  median (busy shots need a larger jump); frame t is not frame t-1 darker or brighter (an affine fit
  of the pixels, as a flash or a fade step would be); neither is flat (black, white); and the new
  content persists: neither t-1 nor t comes back within ``flash`` frames (a flash of a frame or two).
* **gradual transition** centred at t over ``s = t-L .. e = t+L`` (L in ``spans``) without a hard cut
  inside: the ends differ (``D(s, e) >= change``), are steady (within ``steady`` of their
  neighbours: not inside a fade, not on a flash), are not one picture at two brightnesses, and every
  frame between is a mix of them: least squares ``f_m ~ b f_s + g f_e + c`` leaves an RMS residual
  under ``blend`` times ``RMS(f_s - f_e)``. A dissolve is such a mix with b + g = 1, a fade through
  black or white one with b or g near 0; a pan or a zoom moves the picture, which no mix of the end
  frames reproduces (fast pan of the labelled set: residual >= 0.83; its zoom never changes D by
  0.5). The boundary goes on the first frame whose fit weighs the new shot more than the old one.

Gradual candidates are many per transition (centres, spans): one stands if no stronger candidate
lies within ``merge`` frames (non-maximum suppression); hard cuts are exact and always stand.

:class:`ShotDetector` streams: ``push(image)`` returns the boundaries that became final; with
look-ahead a frame's status is final ``settled`` frames later (about 22, up to 32 while candidates
wait). ``causal=True`` (live) decides at once from the past only: hard cuts, without the return test;
:class:`Shots` in a causal run adds the look-ahead detector's dissolves and fades as late boundaries
(the state is reset when the transition is known, about 22 frames after its end).
Precision and recall on a labelled set: tests/shot_clips.py, docs/restore.md ("Edited footage").
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

THUMB = (48, 64)   # (width, height) of the thumbnails every test runs on
BLANK = 0.02       # pixel standard deviation (0..1) under which a frame is one flat colour


@dataclass(frozen=True)
class ShotSettings:
    hard: float = 0.4              # d_t of a hard cut (consecutive frames within a shot: <= 0.16 measured)
    ratio: float = 3.0             # ... and at least this many times the median d of the last `history`
    history: int = 10
    flash: int = 3                 # frames a flash may last: the content must not return within them
    change: float = 0.5            # D(s, e) of a gradual transition's ends
    steady: float = 0.25           # D of a transition's end to its neighbours (3 apart within a shot: <= 0.19)
    blend: float = 0.3             # residual of the mix model, relative to RMS(f_s - f_e)
    spans: Tuple[int, ...] = (3, 6, 10)   # half-lengths L of the gradual test (transitions up to ~2 L frames)
    merge: int = 10                # a gradual candidate this close (frames) to a stronger one is the same boundary


@dataclass
class _Features:
    hist: np.ndarray     # (128,) float32 hue-saturation histogram, sums to 1
    pixels: np.ndarray   # (48 * 64 * 3,) float64 in [0, 1]
    blank: bool          # one flat colour (black, white): no content to compare


def features(image: np.ndarray) -> _Features:
    small = cv2.resize(image, THUMB, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).flatten()
    pixels = small.reshape(-1).astype(np.float64) / 255.0
    return _Features((hist / max(hist.sum(), 1.0)).astype(np.float32), pixels, float(pixels.std()) < BLANK)


def distance(a: _Features, b: _Features) -> float:
    """Bhattacharyya distance of the colour histograms: 0 same colours .. 1 disjoint."""
    return float(cv2.compareHist(a.hist, b.hist, cv2.HISTCMP_BHATTACHARYYA))


def mix_fit(start: _Features, end: _Features, middle: _Features) -> Tuple[float, float, float]:
    """Fit middle ~ b start + g end + c; returns (b, g, RMS residual)."""
    basis = np.stack([start.pixels, end.pixels, np.ones_like(start.pixels)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, middle.pixels, rcond=None)
    residual = middle.pixels - basis @ coef
    return float(coef[0]), float(coef[1]), float(np.sqrt(np.mean(residual * residual)))


def _brightness_only(a: _Features, b: _Features, tolerance: float) -> bool:
    """Is b the content of a, darker, brighter or faded to a flat colour (b ~ k a + c)?"""
    basis = np.stack([a.pixels, np.ones_like(a.pixels)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, b.pixels, rcond=None)
    residual = b.pixels - basis @ coef
    return float(np.sqrt(np.mean(residual * residual))) <= tolerance


@dataclass
class _Candidate:
    at: int          # first frame of the new shot
    strength: float  # D(s, e): the clearest span of a transition wins
    start: int       # s
    end: int         # e
    hard: bool = False
    decided: bool = False


class ShotDetector:
    """Streaming shot-boundary detection. ``push(image)`` -> boundaries (first frames of new shots)
    that became final; ``finish()`` -> the rest. ``settled``: frames below it have a final status."""

    def __init__(self, settings: Optional[ShotSettings] = None, causal: bool = False):
        self.s = settings or ShotSettings()
        self.causal = causal
        self.lookahead = 0 if causal else max(self.s.spans) + self.s.flash
        self._feats: Dict[int, _Features] = {}
        self._d: Dict[int, float] = {}
        self.count = 0
        self._next_centre = 1 - max(self.s.spans)   # next gradual centre (hard cuts are tested max(spans) later)
        self._pending: List[_Candidate] = []   # candidates not decided yet (and recent decided ones)
        self._hard: List[int] = []            # recent hard cuts (they veto gradual spans around them)
        self.cuts: List[int] = []        # every boundary found so far

    # ------------------------------------------------------------------ streaming
    def push(self, image: np.ndarray) -> List[int]:
        t = self.count
        self._feats[t] = features(image)
        if t > 0:
            self._d[t] = distance(self._feats[t - 1], self._feats[t])
        self.count += 1
        if self.causal:
            found = [t] if t > 0 and self._is_hard(t, check_flash=False) else []
            self.cuts += found
            self._forget(t - self.s.history - 1)
            return found
        out = []
        while self._next_centre + self.lookahead < self.count:
            out += self._evaluate(self._next_centre)
            self._next_centre += 1
        self._forget(self._next_centre - 2 * max(self.s.spans) - self.s.flash - self.s.history - 2)
        return out

    def finish(self) -> List[int]:
        """End of the video: test the last frames with what is left, close the open boundary."""
        out = []
        if not self.causal:
            while self._next_centre < self.count:
                out += self._evaluate(self._next_centre)
                self._next_centre += 1
            out += self._decide(None)
        return out

    @property
    def settled(self) -> int:
        """Frames ``< settled`` will not get a boundary any more."""
        if self.causal:
            return self.count
        earliest = self._next_centre - max(self.s.spans) + 1
        undecided = [c.at for c in self._pending if not c.decided]
        if undecided:
            earliest = min(earliest, min(undecided))
        return max(0, min(earliest, self.count))

    def _forget(self, below: int) -> None:
        for t in [k for k in self._feats if k < below]:
            del self._feats[t]
            self._d.pop(t, None)

    # ------------------------------------------------------------------ tests
    def _is_hard(self, t: int, check_flash: bool) -> bool:
        d = self._d[t]
        if self._feats[t].blank or self._feats[t - 1].blank:
            return False   # into or out of black / white: a fade's middle, or a flash; the gradual test decides
        recent = [self._d[k] for k in range(max(1, t - self.s.history), t) if k in self._d]
        if d < self.s.hard or (recent and d < self.s.ratio * sorted(recent)[len(recent) // 2]):
            return False
        a, b = self._feats[t - 1], self._feats[t]
        tolerance = self.s.blend * float(np.sqrt(np.mean((a.pixels - b.pixels) ** 2)))
        if _brightness_only(a, b, tolerance) or _brightness_only(b, a, tolerance):
            return False   # the same picture darker or brighter: a step of a fade, or a flash
        if check_flash:
            # the new content persists and differs from the frames before t-1 too: a flash (a frame or
            # two, over-exposed or white) comes back to what was there before it
            f = self._feats
            for j in range(1, self.s.flash + 1):
                if t + j in f and distance(f[t - 1], f[t + j]) < 0.5 * d:
                    return False
                if t - 1 - j in f and distance(f[t - 1 - j], f[t]) < 0.5 * d:
                    return False
        return True

    def _gradual(self, t: int, half: int) -> Optional[_Candidate]:
        s, e = t - half, t + half
        if s < 0 or e >= self.count or any(s <= c <= e + 1 for c in self._hard):
            return None   # out of range, or explained by a hard cut inside
        f = self._feats
        change = distance(f[s], f[e])
        if change < self.s.change:
            return None
        # both ends lie in steady content: not inside a fade or a dissolve, not on a flash
        for j in range(1, self.s.flash + 1):
            if (e + j in f and distance(f[e], f[e + j]) > self.s.steady) or \
                    (s - j in f and distance(f[s - j], f[s]) > self.s.steady):
                return None
        scale = float(np.sqrt(np.mean((f[s].pixels - f[e].pixels) ** 2)))
        if scale <= 1e-6 or _brightness_only(f[s], f[e], self.s.blend * scale) or \
                _brightness_only(f[e], f[s], self.s.blend * scale):
            return None   # one end is the other darker or brighter (a fade's half, a flash): same content
        at = e
        for m in range(s + 1, e):
            b, g, residual = mix_fit(f[s], f[e], f[m])
            if residual > self.s.blend * scale:
                return None        # not a mix of the two ends: motion (pan, zoom), not a transition
            if at == e and g > b:
                at = m             # the first frame weighing the new shot more (after a fade's flat middle)
        return _Candidate(at, change, s, e)

    def _evaluate(self, t: int) -> List[int]:
        """Hard cut at t + max(spans), then gradual transitions centred at t (every hard cut their spans
        may hold is known by then); then decide the candidates whose neighbourhood is complete."""
        h = t + max(self.s.spans)
        if h in self._d and self._is_hard(h, check_flash=True):
            self._hard.append(h)
            self._pending.append(_Candidate(h, 1.0 + self._d[h], h - 1, h, hard=True))
        for half in self.s.spans:
            candidate = self._gradual(t, half)
            if candidate is not None:
                self._pending.append(candidate)
        self._hard = [c for c in self._hard if c >= t - 2 * max(self.s.spans)]
        return self._decide(known_below=t + 1 - max(self.s.spans) + 1)

    def _decide(self, known_below: Optional[int]) -> List[int]:
        """Non-maximum suppression: a gradual candidate stands if no stronger candidate (a hard cut is
        always stronger) lies within ``merge`` frames; hard cuts always stand. ``known_below``: every
        candidate before it is known (None: all are)."""
        out = []
        window = self.s.merge
        for c in sorted(self._pending, key=lambda c: c.at):
            if known_below is not None and c.at + window >= known_below:
                break
            near = [o for o in self._pending if abs(o.at - c.at) <= window and o is not c]
            if c.hard or all((c.strength, -c.at) > (o.strength, -o.at) for o in near):
                if not (self.cuts and not c.hard and c.at - self.cuts[-1] <= window):
                    accepted = self._accept(c.at)
                    if accepted is not None:
                        out.append(accepted)
            c.decided = True
        self._pending = [c for c in self._pending if not c.decided or
                         (known_below is not None and c.at + 2 * window >= known_below)]
        return out

    def _accept(self, at: int) -> Optional[int]:
        if at in self.cuts:
            return None
        self.cuts.append(at)
        self.cuts.sort()
        return at


def find_cuts(frames: Sequence[np.ndarray], settings: Optional[ShotSettings] = None, causal: bool = False) -> List[int]:
    """Every boundary of a list of frames (first frames of new shots)."""
    detector = ShotDetector(settings, causal=causal)
    for image in frames:
        detector.push(image)
    detector.finish()
    return list(detector.cuts)


def read_cut_list(path: Path) -> List[int]:
    """A cut list file: the first frame (0-based) of each new shot, whitespace- or comma-separated;
    ``#`` starts a comment. ValueError with the line at fault otherwise."""
    cuts = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        for word in line.split("#")[0].replace(",", " ").split():
            try:
                value = int(word)
            except ValueError:
                raise ValueError(f"{path}:{number}: {word!r} is not a frame number; a cut list holds the "
                                 f"first frame (0-based) of each new shot, e.g. one number per line") from None
            if value < 0:
                raise ValueError(f"{path}:{number}: frame numbers start at 0, got {value}")
            cuts.append(value)
    return sorted(set(c for c in cuts if c > 0))


class Shots:
    """Where a run's shots start: found while streaming (``auto``), read from a cut list, or none (``off``).

    ``annotate(frames)`` yields ``(frame, starts_a_shot)`` in order, holding frames back only as long
    as the detector needs to decide (its look-ahead); ``cuts`` lists the boundaries seen."""

    def __init__(self, mode: str = "auto", causal: bool = False, settings: Optional[ShotSettings] = None):
        self.mode = mode
        self.detector: Optional[ShotDetector] = None
        self.fixed: Optional[List[int]] = None
        # Causal runs (live) also run the look-ahead detector beside the causal one: a dissolve or a
        # fade is only known once it is over (about ``lookahead`` frames later), and then the state is
        # reset at the frame being pushed, a late boundary, rather than carried for the rest of the shot.
        self.late: Optional[ShotDetector] = None
        self._read_of: Deque[int] = deque()   # late detector's frame number -> frame read, from _read_base
        self._read_base = 0
        self.late_cuts: List[Tuple[int, int]] = []   # (transition's first new frame, frame the reset came at)
        if mode == "auto":
            self.detector = ShotDetector(settings, causal=causal)
            self.late = ShotDetector(settings, causal=False) if causal else None
        elif mode != "off":
            self.fixed = read_cut_list(Path(mode))
        self._fixed = set(self.fixed or ())
        self._last: Optional[int] = None   # push(): number of the previous frame pushed
        self.cuts: List[int] = []

    def annotate(self, frames: Iterable, image_of=lambda f: f.image) -> Iterator[Tuple[object, bool]]:
        if self.detector is None:
            for index, frame in enumerate(frames):
                cut = index in self._fixed
                if cut:
                    self.cuts.append(index)
                yield frame, cut
            return
        waiting: List[object] = []
        first = 0   # index of waiting[0]
        found: set = set()
        for frame in frames:
            waiting.append(frame)
            found.update(self.detector.push(image_of(frame)))
            while waiting and first < self.detector.settled:
                yield self._emit(waiting.pop(0), first, found)
                first += 1
        found.update(self.detector.finish())
        while waiting:
            yield self._emit(waiting.pop(0), first, found)
            first += 1

    def _emit(self, frame, index: int, found: set):
        cut = index in found
        if cut:
            self.cuts.append(index)
        return frame, cut

    def push(self, image: np.ndarray, index: Optional[int] = None) -> bool:
        """Causal use (live): does this frame start a new shot? Decided from past frames only.

        ``index``: the frame's number among the frames read (default: the one after the previous push).
        Live drops frames when it falls behind, and a cut list counts frames read: a listed cut on a
        dropped frame starts the new shot at the next frame pushed, and ``cuts`` records that frame."""
        last = self._last
        index = (-1 if last is None else last) + 1 if index is None else int(index)
        if last is not None and index <= last:
            raise ValueError(f"frame {index} pushed after frame {last}: frames come in the order they were read")
        self._last = index
        if self.detector is not None:
            if not self.detector.causal:
                raise ValueError("push() is for causal detection; annotate() holds frames for the look-ahead")
            hard = bool(self.detector.push(image))
            late = self._late_boundary(image, index)   # every frame goes to both detectors
            cut = hard or late
        else:   # a listed cut in (last, index]; the first frame pushed starts the first shot anyway
            cut = last is not None and any(last < c <= index for c in self.fixed or ())
        if cut:
            self.cuts.append(index)
        return cut

    def _late_boundary(self, image: np.ndarray, index: int) -> bool:
        """Does the look-ahead detector close a gradual transition now? Only one that no cut since
        (hard, at once) has already answered: after a cut the state is fresh anyway."""
        if self.late is None:
            return False
        settled = self.late.settled        # boundaries decided now lie at or after it
        while self._read_base < settled and self._read_of:
            self._read_of.popleft()
            self._read_base += 1
        self._read_of.append(index)
        late = False
        for boundary in self.late.push(image):
            at = self._read_of[boundary - self._read_base]
            if self.cuts and self.cuts[-1] >= at - self.late.s.merge:
                continue   # the causal detector's hard cut (at once), or a later cut: nothing carried
            self.late_cuts.append((at, index))
            late = True
        return late
