//! RAVDESS file names: `MM-VV-EE-II-SS-RR-AA.ext`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const EMOTIONS: [&str; 8] = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RavdessName {
    /// 01 full AV, 02 video only, 03 audio only.
    pub modality: u8,
    /// 01 speech, 02 song.
    pub vocal_channel: u8,
    /// 1..=8, see [`EMOTIONS`].
    pub emotion: u8,
    /// 1 normal, 2 strong.
    pub intensity: u8,
    /// 1 "Kids are talking by the door", 2 "Dogs are sitting by the door".
    pub statement: u8,
    pub repetition: u8,
    /// 1..=24; odd male, even female.
    pub actor: u8,
}

impl RavdessName {
    /// Parses a file stem. `Ok(None)`: not a RAVDESS name; `Err`: RAVDESS-shaped but with invalid codes.
    pub fn parse(stem: &str) -> Result<Option<RavdessName>, String> {
        let parts: Vec<&str> = stem.split('-').collect();
        if parts.len() != 7 || !parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit())) {
            return Ok(None);
        }
        let n: Vec<u8> = parts.iter().map(|p| p.parse().unwrap_or(0)).collect();
        let name = RavdessName {
            modality: n[0],
            vocal_channel: n[1],
            emotion: n[2],
            intensity: n[3],
            statement: n[4],
            repetition: n[5],
            actor: n[6],
        };
        let checks = [
            ((1..=3).contains(&name.modality), "modality must be 01-03"),
            ((1..=2).contains(&name.vocal_channel), "vocal channel must be 01-02"),
            ((1..=8).contains(&name.emotion), "emotion must be 01-08"),
            ((1..=2).contains(&name.intensity), "intensity must be 01-02"),
            (!(name.emotion == 1 && name.intensity == 2), "neutral has no strong intensity"),
            ((1..=2).contains(&name.statement), "statement must be 01-02"),
            ((1..=2).contains(&name.repetition), "repetition must be 01-02"),
            ((1..=24).contains(&name.actor), "actor must be 01-24"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, why)) => Err(format!("invalid RAVDESS name '{stem}': {why}")),
            None => Ok(Some(name)),
        }
    }

    pub fn label(&self) -> &'static str {
        EMOTIONS[(self.emotion - 1) as usize]
    }

    pub fn speaker(&self) -> String {
        format!("actor_{:02}", self.actor)
    }

    pub fn is_speech(&self) -> bool {
        self.modality == 3 && self.vocal_channel == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let n = RavdessName::parse("03-01-05-02-01-02-17").unwrap().unwrap();
        assert_eq!((n.label(), n.speaker().as_str(), n.is_speech()), ("angry", "actor_17", true));
        assert!(RavdessName::parse("hello").unwrap().is_none());
        assert!(RavdessName::parse("03-01-09-01-01-01-01").is_err());
        assert!(RavdessName::parse("03-01-01-02-01-01-01").unwrap_err().contains("neutral"));
    }
}
