"""``keep demo``: a local Gradio page that restores a video with :class:`keep.restore.pipeline.VideoRestorer`
and compares input and output frame by frame.

Modules: :mod:`.workspace` (the working folder, sessions, uploads and their limits), :mod:`.job` (one
restoration in a worker thread: progress, cancel, results), :mod:`.frames` (the frame viewer),
:mod:`.app` (the page), :mod:`.cli` (the command). Only :mod:`.app` and :mod:`.cli` import gradio.
"""
