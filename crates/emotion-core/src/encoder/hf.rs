//! Whisper encoders in the Hugging Face layout: `config.json` and `model.safetensors` (or the shards
//! `model.safetensors.index.json` names), as `save_pretrained` writes them and `openai/whisper-*` ship
//! them. The encoder's tensors are renamed to CTranslate2's (q, k and v fused, k's missing bias zero)
//! so one constructor builds both layouts; the size comes from `config.json`. PyTorch pickles
//! (`pytorch_model.bin`) are refused, never unpickled: loading one can run code.

use super::ctranslate2::Ct2Model;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The fields of a Whisper `config.json` the encoder needs.
#[derive(Debug, Deserialize)]
struct WhisperConfig {
    model_type: Option<String>,
    d_model: i64,
    encoder_layers: i64,
    encoder_attention_heads: i64,
    num_mel_bins: i64,
    #[serde(default = "whisper_positions")]
    max_source_positions: i64,
}

fn whisper_positions() -> i64 {
    1500
}

/// The attention heads `config.json` in `dir` gives the encoder (`None` without one: a CTranslate2 folder,
/// whose `model.bin` holds its heads, so its SHA-256 covers them).
pub fn config_heads(dir: &Path) -> Result<Option<i64>> {
    let config_path = dir.join("config.json");
    if dir.join("model.bin").is_file() || !config_path.is_file() {
        return Ok(None);
    }
    Ok(Some(read_config(&config_path)?.encoder_attention_heads))
}

fn read_config(config_path: &Path) -> Result<WhisperConfig> {
    let text = std::fs::read_to_string(config_path).map_err(|e| Error::io(config_path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::model_not_found(config_path, format!("not a Whisper config: {e}")))
}

/// The weight files of a Hugging Face layout folder: one `model.safetensors` or its shards.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let parsed: Index = serde_json::from_str(&text)
            .map_err(|e| Error::model_not_found(&index, format!("not a safetensors index: {e}")))?;
        let mut shards: Vec<String> = parsed.weight_map.into_values().collect();
        shards.sort();
        shards.dedup();
        if shards.is_empty() {
            return Err(Error::model_not_found(&index, "names no weight files"));
        }
        if let Some(bad) = shards.iter().find(|s| s.contains('/') || s.contains('\\') || s.starts_with('.')) {
            return Err(Error::model_not_found(&index, format!("names a shard outside its folder: {bad}")));
        }
        return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
    }
    if dir.join("pytorch_model.bin").is_file() {
        return Err(Error::model_not_found(
            dir.join("pytorch_model.bin"),
            "the folder has only PyTorch pickles, which this library never unpickles (loading one can run code): \
             use a repository or folder with model.safetensors",
        ));
    }
    Err(Error::model_not_found(
        dir,
        "no encoder here: a Whisper encoder folder holds a CTranslate2 model.bin, or config.json with model.safetensors",
    ))
}

/// The encoder's variables of the Hugging Face checkpoint in `dir`, in CTranslate2's names.
pub fn read(dir: &Path, files: &[PathBuf]) -> Result<Ct2Model> {
    let config = read_whisper_config(&dir.join("config.json"))?;
    let hf = encoder_tensors(files)?;
    let primary = &files[0];
    let take = |name: &str| -> Result<Tensor> {
        hf.get(name)
            .map(|t| t.shallow_clone())
            .ok_or_else(|| Error::model_not_found(primary, format!("tensor model.encoder.{name} is missing")))
    };
    let mut tensors = HashMap::new();
    let mut put = |ct2: String, t: Tensor| {
        tensors.insert(ct2, t);
    };
    for (hf_name, ct2) in [
        ("conv1.weight", "conv1/weight"),
        ("conv1.bias", "conv1/bias"),
        ("conv2.weight", "conv2/weight"),
        ("conv2.bias", "conv2/bias"),
        ("embed_positions.weight", "position_encodings/encodings"),
        ("layer_norm.weight", "layer_norm/gamma"),
        ("layer_norm.bias", "layer_norm/beta"),
    ] {
        put(format!("encoder/{ct2}"), take(hf_name)?);
    }
    for i in 0..config.encoder_layers {
        put_layer(&mut put, i, &take)?;
    }
    // The config's layer count is the model's: a checkpoint with more layers than it says is refused,
    // not cut short silently.
    if hf.contains_key(&format!("layers.{}.fc1.weight", config.encoder_layers)) {
        return Err(Error::model_not_found(
            primary,
            format!("holds more encoder layers than config.json's encoder_layers ({})", config.encoder_layers),
        ));
    }
    let conv1 = &tensors["encoder/conv1/weight"];
    if conv1.size()[..2] != [config.d_model, config.num_mel_bins] {
        return Err(Error::model_not_found(
            primary,
            format!(
                "conv1 has shape {:?}, but config.json says d_model {} and num_mel_bins {}",
                conv1.size(),
                config.d_model,
                config.num_mel_bins
            ),
        ));
    }
    let scalars = HashMap::from([("encoder/num_heads".to_string(), config.encoder_attention_heads)]);
    Ok(Ct2Model { spec: "WhisperSpec".into(), tensors, scalars })
}

/// The encoder's tensors (`model.encoder.*` of WhisperForConditionalGeneration and WhisperModel, or
/// `encoder.*`) of every safetensors file, as fp32, keyed by the name after `encoder.`.
fn encoder_tensors(files: &[PathBuf]) -> Result<HashMap<String, Tensor>> {
    let mut hf = HashMap::new();
    for file in files {
        for (name, t) in Tensor::read_safetensors(file).map_err(|e| Error::model_not_found(file, e.to_string()))? {
            let short = name.strip_prefix("model.").unwrap_or(&name);
            if let Some(rest) = short.strip_prefix("encoder.") {
                hf.insert(rest.to_string(), t.f_to_kind(Kind::Float)?);
            }
        }
    }
    Ok(hf)
}

/// config.json, refused unless it describes a Whisper model (30 s window of 1500 positions).
fn read_whisper_config(config_path: &Path) -> Result<WhisperConfig> {
    let config = read_config(config_path)?;
    if config.model_type.as_deref().is_some_and(|t| t != "whisper") {
        return Err(Error::model_not_found(config_path, format!("a {:?} model, not Whisper", config.model_type)));
    }
    if config.max_source_positions != 1500 {
        return Err(Error::model_not_found(
            config_path,
            format!("max_source_positions is {}, not Whisper's 1500", config.max_source_positions),
        ));
    }
    Ok(config)
}

/// Layer `i`'s variables in CTranslate2's names: the query, key and value projections fused into one.
fn put_layer(put: &mut impl FnMut(String, Tensor), i: i64, take: &impl Fn(&str) -> Result<Tensor>) -> Result<()> {
    let (hf_layer, ct2_layer) = (format!("layers.{i}"), format!("encoder/layer_{i}"));
    let attn = |p: &str| format!("{hf_layer}.self_attn.{p}");
    let qkv_weight = Tensor::f_cat(
        &[take(&attn("q_proj.weight"))?, take(&attn("k_proj.weight"))?, take(&attn("v_proj.weight"))?],
        0,
    )?;
    // Whisper's key projection has no bias: zero in the fused one.
    let q_bias = take(&attn("q_proj.bias"))?;
    let qkv_bias = Tensor::f_cat(&[q_bias.zeros_like(), take(&attn("v_proj.bias"))?], 0)?;
    let qkv_bias = Tensor::f_cat(&[&q_bias, &qkv_bias], 0)?;
    put(format!("{ct2_layer}/self_attention/linear_0/weight"), qkv_weight);
    put(format!("{ct2_layer}/self_attention/linear_0/bias"), qkv_bias);
    for (hf_name, ct2) in [
        (attn("out_proj.weight"), "self_attention/linear_1/weight"),
        (attn("out_proj.bias"), "self_attention/linear_1/bias"),
        (format!("{hf_layer}.self_attn_layer_norm.weight"), "self_attention/layer_norm/gamma"),
        (format!("{hf_layer}.self_attn_layer_norm.bias"), "self_attention/layer_norm/beta"),
        (format!("{hf_layer}.fc1.weight"), "ffn/linear_0/weight"),
        (format!("{hf_layer}.fc1.bias"), "ffn/linear_0/bias"),
        (format!("{hf_layer}.fc2.weight"), "ffn/linear_1/weight"),
        (format!("{hf_layer}.fc2.bias"), "ffn/linear_1/bias"),
        (format!("{hf_layer}.final_layer_norm.weight"), "ffn/layer_norm/gamma"),
        (format!("{hf_layer}.final_layer_norm.bias"), "ffn/layer_norm/beta"),
    ] {
        put(format!("{ct2_layer}/{ct2}"), take(&hf_name)?);
    }
    Ok(())
}
