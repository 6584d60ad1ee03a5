from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [line.strip() for line in (here / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

setup(
    name="keep-vsr",
    version="0.1.0",
    description="KEEP: Kalman-Inspired Feature Propagation for Video Face Super-Resolution (ECCV 2024)",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["keep", "keep.*"]),
    install_requires=requirements,
    extras_require={
        # keep demo (Gradio 6 needs Python >= 3.10; tested with gradio 6.31.0, which caps pillow < 13: pip
        # then installs pillow 12.x, which torchvision, matplotlib and scikit-image accept). The test extra
        # has what tests/test_demo.py drives the app with: gradio (its client) and playwright.
        "demo": ["gradio>=6.0,<7; python_version>='3.10'"],
        # --backend onnxruntime / openvino and keep export (docs/deploy.md); onnx reads the exported
        # files back (manifest, fp16 conversion). For --device cuda install onnxruntime-gpu instead.
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "openvino": ["onnx>=1.15", "openvino>=2024.0"],
        "test": ["pytest>=7", "pytest-timeout", "gradio>=6.0,<7; python_version>='3.10'",
                 "playwright>=1.40; python_version>='3.10'",
                 # CI tests the exporter and both CPU backends (wheels on PyPI for Linux x86-64)
                 "onnx>=1.15", "onnxruntime>=1.17", "openvino>=2024.0"],
    },
    entry_points={"console_scripts": ["keep=keep.cli:main"]},
)
