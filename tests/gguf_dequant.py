"""Writes reference dequantizations made by the `gguf` package (llama.cpp's own Python
reference) for the dequantization test in tests/suite/dequant_reference.rs.

Usage: gguf_dequant.py OUT_DIR TINY_MODELS_DIR

For every tensor type present in the tiny models it dequantizes one tensor with
gguf.quants.dequantize. BF16, which no tiny model holds, comes from a small GGUF this script
writes itself with gguf.GGUFWriter. It writes OUT_DIR/manifest.json listing
{file, tensor, type, values} where `values` names a raw little-endian float32 file.
"""
import json
import os
import sys

import numpy as np
import gguf


def main():
    out, tiny = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    # A BF16 + F16 file of our own.
    synth = os.path.join(out, "synthetic.gguf")
    w = gguf.GGUFWriter(synth, "llama")
    rng = np.random.default_rng(3)
    data = rng.standard_normal((4, 64)).astype(np.float32) * 3
    w.add_tensor("bf16", gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16), raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.add_tensor("f16", data.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    seen = set()
    manifest = []
    files = [synth] + sorted(os.path.join(tiny, f) for f in os.listdir(tiny) if f.endswith(".gguf"))
    for path in files:
        reader = gguf.GGUFReader(path)
        for t in reader.tensors:
            name = t.tensor_type.name
            if name in seen:
                continue
            seen.add(name)
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
            dst = os.path.join(out, f"{name}.f32")
            values.tofile(dst)
            manifest.append({"file": path, "tensor": t.name, "type": name, "values": dst})
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
