"""HDR (PQ / HLG, BT.2020) RGB -> SDR BT.709 RGB, for the one case where no 10-bit encoder exists.

keep/io/writer.py writes HDR input at 10 bits with its tags wherever PyAV's FFmpeg has a 10-bit
encoder (libx264 High 10 or libx265 Main 10). Without one, 8-bit pixels under PQ/HLG tags would band
and are outside HDR10, so the frames are converted to SDR instead, and the summary says so. The
conversion is the plain textbook chain, not a grading tool:

1. non-linear signal -> display light in cd/m2: the PQ EOTF (SMPTE ST 2084), or for HLG the inverse
   OETF and the OOTF with system gamma 1.2 on a 1000 cd/m2 display (ITU-R BT.2100), per channel;
2. relative to HDR reference white, 203 cd/m2 (ITU-R BT.2408), which becomes SDR white;
3. highlights compressed with the extended Reinhard curve (white point: 1000 cd/m2);
4. BT.2020 -> BT.709 primaries (linear 3x3, ITU-R BT.2087), clipped to the gamut;
5. the BT.1886 display gamma (2.4) inverted, 8 bits.
"""
from __future__ import annotations

import numpy as np

PQ, HLG = 16, 18   # AVColorTransferCharacteristic
REFERENCE_WHITE = 203.0   # cd/m2 (ITU-R BT.2408)
PEAK = 1000.0             # cd/m2: highlights up to here keep some detail
_BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728],
                             [-0.1246, 1.1329, -0.0083],
                             [-0.0182, -0.1006, 1.1187]], np.float32)


def pq_to_nits(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 EOTF: signal in [0, 1] -> cd/m2 (0 .. 10000)."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = np.power(np.clip(signal, 0, 1), 1 / m2)
    return 10000.0 * np.power(np.maximum(p - c1, 0) / (c2 - c3 * p), 1 / m1)


def hlg_to_nits(signal: np.ndarray) -> np.ndarray:
    """ITU-R BT.2100 HLG inverse OETF, then the OOTF (gamma 1.2, 1000 cd/m2 peak), per channel."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.clip(signal, 0, 1)
    scene = np.where(e <= 0.5, e * e / 3, (np.exp((e - c) / a) + b) / 12)
    return PEAK * np.power(scene, 1.2)


def hdr_to_sdr(image: np.ndarray, transfer: int) -> np.ndarray:
    """(H, W, 3) RGB, uint8 or uint16, PQ or HLG / BT.2020 -> (H, W, 3) uint8 RGB, SDR BT.709."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    signal = image.astype(np.float32) / scale
    nits = pq_to_nits(signal) if transfer == PQ else hlg_to_nits(signal)
    light = nits / REFERENCE_WHITE
    white = PEAK / REFERENCE_WHITE
    light = light * (1 + light / (white * white)) / (1 + light)   # extended Reinhard: PEAK -> 1
    light = np.clip(light @ _BT2020_TO_BT709.T, 0, 1)
    return np.rint(np.power(light, 1 / 2.4) * 255).astype(np.uint8)
