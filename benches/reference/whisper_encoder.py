"""PyTorch reference of the Whisper encoder branch: Hugging Face's WhisperFeatureExtractor and
WhisperEncoder (transformers 4.52) with the weights of a CTranslate2 model.bin, hidden states
mean-pooled over each clip's own positions, as the Rust core computes them in `padded` mode.

  python whisper_encoder.py REQUEST.json
REQUEST: {"model": "model.bin" (or "hfDir": a Hugging Face layout folder), "waves": "in.f32", "lengths": [n, ...] (16 kHz samples per clip,
          concatenated), "out": "prefix", "bench": false, "threads": 0}
Writes prefix.pooled.f32 ([clips, layers + 1, width]) and prefix.mel.f32 (the first clip's log-mel,
[n_mels, 3000]); prints one JSON line: the shape and, when "bench", clips/s of log-mel + encoder +
pooling (`clipsPerSecond`) and of the encoder alone.
"""
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from whisper_to_onnx import dequantised, read_ctranslate2  # noqa: E402


def hf_encoder(model_bin):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    v = read_ctranslate2(model_bin)
    t = lambda name: torch.from_numpy(dequantised(v, name))
    width, n_mels, _ = v["encoder/conv1/weight"].shape
    layers = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    heads = int(v["encoder/num_heads"])
    ffn = v["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    config = WhisperConfig(num_mel_bins=n_mels, d_model=width, encoder_layers=layers, encoder_attention_heads=heads,
                           encoder_ffn_dim=ffn, max_source_positions=1500, activation_function="gelu")
    sd = {"conv1.weight": t("encoder/conv1/weight"), "conv1.bias": t("encoder/conv1/bias"),
          "conv2.weight": t("encoder/conv2/weight"), "conv2.bias": t("encoder/conv2/bias"),
          "embed_positions.weight": t("encoder/position_encodings/encodings"),
          "layer_norm.weight": t("encoder/layer_norm/gamma"), "layer_norm.bias": t("encoder/layer_norm/beta")}
    for i in range(layers):
        s, d = f"encoder/layer_{i}", f"layers.{i}"
        sa = f"{s}/self_attention"
        q, k, vv = t(f"{sa}/linear_0/weight").split(width)
        qb, _, vb = t(f"{sa}/linear_0/bias").split(width)
        sd.update({
            f"{d}.self_attn.q_proj.weight": q, f"{d}.self_attn.k_proj.weight": k, f"{d}.self_attn.v_proj.weight": vv,
            f"{d}.self_attn.q_proj.bias": qb, f"{d}.self_attn.v_proj.bias": vb,
            f"{d}.self_attn.out_proj.weight": t(f"{sa}/linear_1/weight"), f"{d}.self_attn.out_proj.bias": t(f"{sa}/linear_1/bias"),
            f"{d}.self_attn_layer_norm.weight": t(f"{sa}/layer_norm/gamma"), f"{d}.self_attn_layer_norm.bias": t(f"{sa}/layer_norm/beta"),
            f"{d}.final_layer_norm.weight": t(f"{s}/ffn/layer_norm/gamma"), f"{d}.final_layer_norm.bias": t(f"{s}/ffn/layer_norm/beta"),
            f"{d}.fc1.weight": t(f"{s}/ffn/linear_0/weight"), f"{d}.fc1.bias": t(f"{s}/ffn/linear_0/bias"),
            f"{d}.fc2.weight": t(f"{s}/ffn/linear_1/weight"), f"{d}.fc2.bias": t(f"{s}/ffn/linear_1/bias"),
        })
    encoder = WhisperEncoder(config)
    encoder.load_state_dict(sd, strict=True)
    return encoder.eval(), n_mels


def hf_encoder_from_dir(folder):
    """The encoder of a Hugging Face layout folder (config.json + model.safetensors or shards)."""
    import glob

    from safetensors.torch import load_file
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig.from_json_file(os.path.join(folder, "config.json"))
    state = {}
    for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        state.update(load_file(f))
    prefix = "model.encoder."
    encoder = WhisperEncoder(config)
    encoder.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return encoder.eval(), config.num_mel_bins


def main(path):
    req = json.load(open(path))
    if req.get("threads"):
        torch.set_num_threads(req["threads"])
    from transformers import WhisperFeatureExtractor

    encoder, n_mels = hf_encoder_from_dir(req["hfDir"]) if req.get("hfDir") else hf_encoder(req["model"])
    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    flat = np.fromfile(req["waves"], dtype=np.float32)
    offsets = np.cumsum([0] + req["lengths"])
    waves = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    pooled, seconds, total = [], 0.0, 0.0
    with torch.inference_mode():
        for i, w in enumerate(waves):
            begin = time.perf_counter()
            features = extractor(w, sampling_rate=16000, return_tensors="pt").input_features
            start = time.perf_counter()
            states = encoder(features, output_hidden_states=True).hidden_states
            seconds += time.perf_counter() - start
            real = -(-(len(w) // 160) // 2)
            pooled.append(torch.stack([s[0, :real].mean(0) for s in states]))
            total += time.perf_counter() - begin
            if i == 0:
                features[0].numpy().astype(np.float32).tofile(req["out"] + ".mel.f32")
    out = torch.stack(pooled).numpy().astype(np.float32)
    out.tofile(req["out"] + ".pooled.f32")
    result = {"shape": list(out.shape)}
    if req.get("bench"):
        result["clipsPerSecond"] = len(waves) / total
        result["encoderOnlyClipsPerSecond"] = len(waves) / seconds
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
