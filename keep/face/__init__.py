"""Faces in in-the-wild frames: detection backends, tracking, landmark smoothing, alignment, paste-back."""
from keep.face.align import FACE_SIZE, FFHQ_TEMPLATE_512, align_matrix, crop_matrix, warp_face
from keep.face.detect import Detection, FaceDetector, make_detector
from keep.face.paste import FacePaster
from keep.face.smoothing import GapFiller, StreamingGaussian, gaussian_kernel
from keep.face.tracking import FaceTracker

__all__ = ["FACE_SIZE", "FFHQ_TEMPLATE_512", "Detection", "FaceDetector", "FacePaster", "FaceTracker",
           "GapFiller", "StreamingGaussian", "align_matrix", "crop_matrix", "gaussian_kernel", "make_detector",
           "warp_face"]
