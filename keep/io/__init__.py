"""Reading and writing frames: video files and frame folders through PyAV / OpenCV, audio copy.

Frames are always ``(H, W, 3)`` uint8 RGB numpy arrays in this package.
"""
from keep.io.errors import InputError
from keep.io.images import IMAGE_SUFFIXES, list_frames, read_image, write_image
from keep.io.source import VIDEO_SUFFIXES, Frame, FrameSource, SourceInfo, find_inputs, open_source, read_frames
from keep.io.writer import VideoWriter

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "InputError", "Frame", "FrameSource", "SourceInfo", "VideoWriter",
           "find_inputs", "list_frames", "open_source", "read_frames", "read_image", "write_image"]
