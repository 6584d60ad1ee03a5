"""The page of ``keep demo`` (Gradio Blocks): upload, options, progress, results, frame viewer.

Handlers take ``gr.Request`` to find their session in the :class:`Workspace`; the restoration itself
is a :class:`keep.demo.job.RestoreJob` (no Gradio in it), polled by a generator that yields progress.
The restore event has ``concurrency_limit=1`` per device, so further clicks wait in Gradio's queue,
which shows each page its position.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Sequence

import gradio as gr
import torch

from keep.demo.frames import frame_view
from keep.demo.job import DemoSettings, ModelCache, RestoreJob
from keep.demo.workspace import UPLOAD_SUFFIXES, Limits, Workspace
from keep.restore.progress import default_window
from keep.restore.restorer import resolve_device
from keep.weights import WEIGHTS

STATE_CARRIED = "carried across windows"
STATE_RESET = "reset every window (release)"
NO_UPSAMPLER = "none"
CSS = """
#status { min-height: 2.5em; }
.frame-view img { object-fit: contain; }
"""


def keep_weight_names() -> List[str]:
    """Registry names of KEEP checkpoints (the network's own weights, not detectors or metrics)."""
    return [name for name, item in WEIGHTS.items() if item.subdir == "KEEP"]


def markdown_text(text: str) -> str:
    """Plain text shown literally in Markdown (file names like KEEP_Asian must not turn italic)."""
    return re.sub(r"([\\`*_{}\[\]<>#|~])", r"\\\1", text)


def error_markdown(message: str) -> str:
    return f"**Error:** {markdown_text(message)}"


def build_app(workspace: Workspace, limits: Limits = Limits(), models: Optional[ModelCache] = None,
              device: str = "auto", weights: str = "keep-v1", examples: Sequence[Path] = ()) -> gr.Blocks:
    models = models or ModelCache()
    threads = torch.get_num_threads()   # the app's (--threads): each run's worker thread uses it too
    resolved_device = resolve_device(device)
    device_name = str(resolved_device)
    choices = keep_weight_names()
    if weights not in choices:
        choices = [weights] + choices
    labels = [(Path(c).name if Path(c).suffix else c, c) for c in choices]

    with gr.Blocks(title="KEEP demo", analytics_enabled=False, delete_cache=(1800, 7200)) as demo:
        gr.Markdown(
            "# KEEP: restore a face video and compare before and after\n"
            f"Upload a video or a zip of frames (up to {limits.max_upload_mb:g} MB, {limits.max_frames} frames, "
            f"{limits.max_seconds:g} s), choose the options, press **Restore**. One restoration runs at a time "
            f"on this machine's {device_name}; others wait in a queue that shows their position.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                upload = gr.File(label="Video or zip of frames", file_types=list(UPLOAD_SUFFIXES),
                                 elem_id="upload")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Examples")
                with gr.Accordion("Options", open=True):
                    weight_box = gr.Dropdown(labels, value=weights, label="Weights", elem_id="weights")
                    checkpoint = gr.File(label="…or upload a checkpoint (.pth), used instead",
                                         file_types=[".pth", ".pt"], elem_id="checkpoint")
                    aligned = gr.Checkbox(False, label="Frames are aligned face crops (no detection)",
                                          elem_id="aligned")
                    detector = gr.Radio(["retinaface", "dlib"], value="retinaface", label="Face detector")
                    all_faces = gr.Checkbox(False, label="All faces (else the one nearest the centre)")
                    # keep restore's default for this device (one rule: keep/restore/progress.py)
                    window = gr.Slider(1, 60, value=default_window(resolved_device), step=1,
                                       label="Window (frames per network call)")
                    state = gr.Radio([STATE_CARRIED, STATE_RESET], value=STATE_CARRIED, label="Kalman state")
                    baseline = gr.Checkbox(False, label="Image baseline (each frame alone, no propagation)")
                    upsampler = gr.Dropdown([NO_UPSAMPLER, "realesrgan"], value=NO_UPSAMPLER,
                                            label="Background upsampler")
                    precision = gr.Dropdown(["fp32", "fp32-strict", "fp16", "bf16"], value="fp32",
                                            label="Precision (fp16 / bf16: GPU only)")
                    crf = gr.Slider(0, 51, value=18, step=1, label="CRF (x264 quality, lower is better)")
                with gr.Row():
                    start = gr.Button("Restore", variant="primary", elem_id="start")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Markdown("Upload a clip to begin.", elem_id="status")
            with gr.Column(scale=2, min_width=480):
                with gr.Row():
                    restored = gr.Video(label="Restored", interactive=False, elem_id="restored")
                    compare = gr.Video(label="Side by side: input | restored", interactive=False,
                                       elem_id="compare")
                slider = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=False, elem_id="frame-slider")
                caption = gr.Markdown("", elem_id="frame-caption")
                with gr.Row(elem_classes="frame-view"):
                    input_frame = gr.Image(label="Input frame", type="filepath", interactive=False,
                                           elem_id="input-frame")
                    output_frame = gr.Image(label="Output frame", type="filepath", interactive=False,
                                            elem_id="output-frame")
                with gr.Row(elem_classes="frame-view"):
                    crop = gr.Image(label="Aligned face: before", type="filepath", interactive=False,
                                    elem_id="face-before")
                    face = gr.Image(label="Aligned face: after", type="filepath", interactive=False,
                                    elem_id="face-after")
                summary = gr.Textbox(label="Run summary", lines=6, interactive=False, elem_id="summary")
                downloads = gr.File(label="Downloads: restored video, restored faces (zip)", file_count="multiple",
                                    interactive=False, elem_id="downloads")

        viewer = [input_frame, output_frame, crop, face, caption]
        results = [restored, compare, slider] + viewer + [summary, downloads]

        def restore(upload_path, checkpoint_path, weights_value, aligned_value, detector_value, all_faces_value,
                    window_value, state_value, baseline_value, upsampler_value, precision_value, crf_value,
                    request: gr.Request):
            session = workspace.session(request.session_hash)
            session.remember_upload(upload_path)
            session.remember_upload(checkpoint_path)
            skip = [gr.skip()] * len(results)
            if session.job is not None and not session.job.finished:
                yield [error_markdown("this page's previous run is still stopping; try again in a moment")] + skip
                return
            settings = DemoSettings(
                weights=weights_value, checkpoint=checkpoint_path or None, detector=detector_value,
                aligned=bool(aligned_value), all_faces=bool(all_faces_value), window=int(window_value),
                reset_state_per_window=state_value == STATE_RESET, image_baseline=bool(baseline_value),
                bg_upsampler=None if upsampler_value == NO_UPSAMPLER else upsampler_value,
                precision=precision_value, crf=int(crf_value))
            job = RestoreJob(upload_path, settings, session.new_run_folder(), limits, models, device, threads)
            session.job = job
            cleared = [None, None, gr.Slider(0, 1, value=0, interactive=False), None, None, None, None, "", "", None]
            yield ["Starting…"] + cleared
            job.start()
            try:
                while not job.wait(0.4):
                    yield [_running_text(job)] + skip
                if job.state == "done":
                    session.result = result = job.result
                    view = frame_view(result, 0)
                    files = [str(result.video)] + ([str(result.faces_zip)] if result.faces_zip else [])
                    yield ([f"**Done:** {markdown_text(result.name)}: {markdown_text(job.progress().describe_done())}",
                            str(result.video), str(result.compare),
                            gr.Slider(0, max(result.frames - 1, 1), value=0, step=1, interactive=result.frames > 1)]
                           + _view_values(view) + [result.summary, files])
                elif job.state == "cancelled":
                    yield ["**Cancelled:** the run stopped and its partial files were removed."] + skip
                else:
                    yield [error_markdown(job.error or "the run failed")] + skip
            finally:
                if not job.finished:      # the page cancelled the event or went away: stop the worker
                    job.cancel()

        def cancel(request: gr.Request):
            session = workspace.session(request.session_hash)
            job = session.job
            if job is None or job.finished:
                return "Nothing is running."
            job.cancel()
            if job.wait(timeout=30):
                return "**Cancelled:** the run stopped and its partial files were removed."
            return ("**Cancelling:** the network is finishing its current window; the run's files are removed "
                    "as soon as it ends.")

        def show_frame(index, request: gr.Request):
            session = workspace.session(request.session_hash)
            if session.result is None:
                return [None, None, None, None, "Restore a clip first."]
            return _view_values(frame_view(session.result, index))

        inputs = [upload, checkpoint, weight_box, aligned, detector, all_faces, window, state, baseline, upsampler,
                  precision, crf]
        run_event = start.click(restore, inputs, [status] + results, api_name="restore", concurrency_limit=1,
                                concurrency_id=f"restore-{device_name}", show_progress_on=[status])
        stop.click(cancel, None, [status], api_name="cancel", cancels=[run_event], concurrency_limit=None,
                   show_progress="hidden")
        slider.change(show_frame, [slider], viewer, api_name="frame", concurrency_limit=None,
                      trigger_mode="always_last", show_progress="hidden")

        def remember(path, request: gr.Request):
            """An upload belongs to its page as soon as it is stored (not only once Restore is pressed)."""
            workspace.session(request.session_hash).remember_upload(path)

        for box in (upload, checkpoint):
            box.upload(remember, [box], None, api_name=False, concurrency_limit=None, show_progress="hidden",
                       queue=False)

        def end_session(request: gr.Request):
            workspace.end_session(request.session_hash)

        demo.unload(end_session)
    return demo


def _running_text(job: RestoreJob) -> str:
    if job.state == "waiting":
        return "Waiting for the device: the previous run is finishing its last window…"
    if job.state in ("queued",) or (job.state == "running" and job.progress().frames == 0):
        return "Loading the network, reading and aligning the first frames…"
    return f"Restoring: {job.progress().describe()}"


def _view_values(view) -> list:
    as_str = [str(p) if p is not None else None for p in (view.input, view.output, view.crop, view.face)]
    return as_str + [markdown_text(view.caption)]
