"""Classify three dragons with an exported model and onnxruntime alone (no PyTorch, no dragon-lightning).

    dragon-lightning export --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --output model.onnx
    python examples/onnx_inference.py model.onnx

The model takes float32 [N, 2] features (numberToes, bodyLength, after the tutorial's recipe) and
returns one probability per class, the index of the class the model decides (its threshold applied,
as ``dragon-lightning predict`` decides) and whether the dragon lies far outside the training data;
the class names are in the file's metadata.
"""

import json
import sys

import numpy as np
import onnxruntime


def main(path: str) -> None:
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    class_names = json.loads(metadata["class_names"])
    feature_names = json.loads(metadata["feature_names"])
    dragons = np.array([[5, 150.0], [10, 200.0], [20, 260.0]], dtype=np.float32)  # float64 is refused
    outputs = ["probabilities", "predicted", "outside_training_range"]
    probabilities, predicted, outside = session.run(outputs, {"features": dragons})
    print(f"{metadata['task']} model; inputs {', '.join(feature_names)}")
    for features, row, chosen, far in zip(dragons, probabilities, predicted, outside):
        shares = ", ".join(f"{name} {p:.3f}" for name, p in zip(class_names, row))
        warning = " (far outside the training data)" if far else ""
        print(f"{features[0]:g} toes, body length {features[1]:g}: {class_names[chosen]} ({shares}){warning}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/onnx_inference.py MODEL.onnx")
    main(sys.argv[1])
