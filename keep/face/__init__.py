"""Faces in in-the-wild frames: detection backends, shot boundaries, tracking, landmark smoothing,
alignment (one pipeline: :class:`keep.face.tracks.FaceTracks`), paste-back."""
from keep.face.align import FACE_SIZE, FFHQ_TEMPLATE_512, align_matrix, crop_matrix, warp_face
from keep.face.detect import Detection, FaceDetector, make_detector
from keep.face.paste import FacePaster
from keep.face.shots import ShotDetector, Shots
from keep.face.smoothing import GapFiller, StreamingGaussian, gaussian_kernel
from keep.face.tracking import FaceTracker
from keep.face.tracks import FaceReady, FaceTracks, TrackEnded, TrackStarted

__all__ = ["FACE_SIZE", "FFHQ_TEMPLATE_512", "Detection", "FaceDetector", "FacePaster", "FaceReady", "FaceTracker",
           "FaceTracks", "GapFiller", "ShotDetector", "Shots", "StreamingGaussian", "TrackEnded", "TrackStarted",
           "align_matrix", "crop_matrix", "gaussian_kernel", "make_detector", "warp_face"]
