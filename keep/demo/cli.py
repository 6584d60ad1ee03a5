"""``keep demo``: a local web page that restores a video and compares it with its input, frame by frame."""
from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import time
from pathlib import Path

from keep.restore.cli import _number

EPILOG = """examples:
  keep demo                                  # http://127.0.0.1:7860, KEEP v1.0.0 (fetched on first use)
  keep demo --weights my_export.pth --port 8000
  keep demo --workdir /data/demo --examples clips/  # work on another disk; offer the videos of clips/ as examples
needs the optional extra: pip install -e ".[demo]"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=_number(int, "a port number", low=1, high=65535), default=7860,
                        help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also open a public gradio.live link (Gradio's tunnel; only when asked)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder in which the app makes its own folder for uploads, runs and temporary "
                             "files (default: the system's temporary folder); removed when it stops. Files "
                             "already in it are never served nor touched")
    parser.add_argument("--weights", default="keep-v1",
                        help="default weights: registry name or checkpoint path (added to the page's list)")
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never fetch weights (KEEP, detector, upsampler): a missing file is reported with "
                             "where to put it")
    parser.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload (default 200 MB)")
    parser.add_argument("--max-frames", type=int, default=1200, help="longest input in frames (default 1200)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="longest video in seconds (default 120)")
    parser.add_argument("--queue-size", type=int, default=16, help="restorations that may wait (default 16)")
    parser.add_argument("--examples", type=Path, default=None,
                        help="folder whose videos / zips are offered as examples on the page")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's)")
    parser.add_argument("--stop-after", type=float, default=None, metavar="SECONDS",
                        help="stop the app after this many seconds (scripted runs, CI)")


def main(args: argparse.Namespace) -> int:
    from keep.demo.workspace import UPLOAD_SUFFIXES, Limits, Workspace

    for name, value in (("--max-upload-mb", args.max_upload_mb), ("--max-frames", args.max_frames),
                        ("--max-seconds", args.max_seconds), ("--queue-size", args.queue_size)):
        if value <= 0:
            print(f"keep demo: error: {name} must be positive, got {value}", file=sys.stderr)
            return 2
    examples = []
    if args.examples is not None:
        if not args.examples.is_dir():
            print(f"keep demo: error: --examples {args.examples} is not a folder", file=sys.stderr)
            return 2
        examples = sorted(p.resolve() for p in args.examples.iterdir() if p.suffix.lower() in UPLOAD_SUFFIXES)
    try:
        workspace = Workspace(args.workdir)
    except OSError as err:
        print(f"keep demo: error: cannot make a working folder in {args.workdir}: {err.strerror or err}",
              file=sys.stderr)
        return 2
    # Gradio reads these when it is imported: uploads and its cache go into the working folder.
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.root)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workspace.root / "examples-cache")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio as gr
    except ImportError:
        workspace.close()
        print('keep demo: error: Gradio is not installed; install the demo extra: pip install -e ".[demo]" '
              '(Python >= 3.10)', file=sys.stderr)
        return 1
    import torch

    from keep.demo.app import CSS, build_app
    from keep.demo.job import ModelCache

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        demo = build_app(workspace, Limits(args.max_upload_mb, args.max_frames, args.max_seconds),
                         ModelCache(download=args.download), args.device, args.weights, examples)
    except ValueError as err:      # e.g. --device cuda without a GPU
        workspace.close()
        print(f"keep demo: error: {err}", file=sys.stderr)
        return 1
    if not _is_loopback(args.host):
        print(f"keep demo: note: listening on {args.host}: other machines can open this page", file=sys.stderr)
    # SIGTERM (a service manager, a test) cleans up like Ctrl+C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.queue(max_size=args.queue_size).launch(
            server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
            max_file_size=int(args.max_upload_mb * 1024 * 1024), theme=gr.themes.Default(), css=CSS,
            allowed_paths=[str(p) for p in examples], footer_links=[], ssr_mode=False, mcp_server=False,
            show_error=False, quiet=True)
        # quiet: Gradio's own banner tells the user to set share=True in launch(), which a command-line
        # user cannot do; this one names the command's flag (a share link is printed by Gradio regardless)
        print(f"keep demo: running on {demo.local_url}", flush=True)
        if not args.share:
            print("keep demo: for a public link (anyone who has it can use this machine), start it with --share",
                  flush=True)
        print(f"keep demo: working folder {workspace.root}; Ctrl+C stops the app", flush=True)
        deadline = None if args.stop_after is None else time.monotonic() + args.stop_after
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except OSError as err:         # the port is taken (Gradio's message names its own launch() arguments)
        message = str(err)
        if "empty port" in message:
            message = f"port {args.port} on {args.host} is in use; pass --port with a free one"
        print(f"keep demo: error: {message}", file=sys.stderr)
        return 1
    finally:
        demo.close()
        workspace.close()
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False



def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
