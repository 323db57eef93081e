//! Finding, labelling, validating and de-duplicating the clips of a corpus.

use super::ravdess::RavdessName;
use crate::audio::decode::{decode_file, probe_file};
use crate::control::{CancelFlag, Progress};
use crate::error::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const AUDIO_EXTENSIONS: [&str; 4] = ["wav", "flac", "ogg", "mp3"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `manifest` when one is given; RAVDESS names if most files carry them in `Actor_NN/` folders or
    /// the root; else `<label>/<file>` folders.
    Auto,
    Ravdess,
    /// `<label>/<file>`: the parent folder is the label.
    Folders,
    /// A CSV (`path,label[,speaker]` header) or JSONL manifest, given as `manifest`.
    Manifest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Read the container header (fast): empty, unknown and header-less files are caught.
    Header,
    /// Decode every clip: also catches truncated and corrupt streams.
    Decode,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct IndexOptions {
    /// How clips are labelled.
    pub layout: Layout,
    /// Manifest file for `layout: manifest` (paths in it are relative to its folder).
    pub manifest: Option<PathBuf>,
    /// RAVDESS: keep speech (`03-01-…`) only.
    pub speech_only: bool,
    /// How thoroughly each clip is checked.
    pub verify: Verify,
    /// Worker threads for hashing and probing; 0 = all cores.
    pub threads: usize,
    /// A folder every manifest entry (relative or absolute, links resolved) must lie in; entries
    /// outside it are refused by name. Unset: absolute paths and links work as written (a manifest
    /// from someone else can then point at any file this process may read).
    pub data_root: Option<PathBuf>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            layout: Layout::Auto,
            manifest: None,
            speech_only: true,
            verify: Verify::Header,
            threads: 0,
            data_root: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "DatasetItem")]
pub struct Item {
    pub path: String,
    pub label: String,
    /// Empty when the layout does not say.
    pub speaker: String,
    /// SHA-256 of the file's bytes.
    pub hash: String,
    pub duration_seconds: Option<f64>,
    pub sample_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ravdess: Option<RavdessName>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Duplicate {
    pub path: String,
    pub duplicate_of: String,
    pub reason: DuplicateReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateReason {
    /// The same bytes as another file.
    Content,
    /// The same RAVDESS name fields as another file.
    Identity,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub path: String,
    pub kind: ProblemKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// Empty, truncated or not audio.
    Unreadable,
    /// Its label contradicts its file name or folder.
    Mislabelled,
    /// No label could be found for it.
    Unlabelled,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub items: usize,
    pub by_label: BTreeMap<String, usize>,
    pub by_speaker: BTreeMap<String, usize>,
    /// Files seen but not kept because of `speechOnly` (RAVDESS song or video).
    pub skipped: usize,
    pub duration_seconds: DurationStats,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DurationStats {
    pub total: f64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetIndex {
    pub root: String,
    /// The layout used (`auto` resolved).
    pub layout: Layout,
    pub items: Vec<Item>,
    /// Files left out because another file has the same content or the same RAVDESS identity.
    pub duplicates: Vec<Duplicate>,
    /// Files that could not be used, with why. Never fatal.
    pub problems: Vec<Problem>,
    pub counts: Counts,
}

/// A candidate file with its label source, before hashing.
struct Candidate {
    path: PathBuf,
    label: String,
    speaker: String,
    ravdess: Option<RavdessName>,
}

pub fn index_dataset(
    root: &Path,
    options: &IndexOptions,
    cancel: &CancelFlag,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<DatasetIndex> {
    if !root.is_dir() {
        return Err(Error::Dataset { path: Some(root.into()), reason: "folder not found".into() });
    }
    let mut problems = Vec::new();
    let mut skipped = 0;
    // A manifest given without a layout is what the user means; with another layout it would be ignored.
    let asked = match (options.layout, &options.manifest) {
        (Layout::Auto, Some(_)) => Layout::Manifest,
        (layout @ (Layout::Folders | Layout::Ravdess), Some(_)) => {
            let name = format!("{layout:?}").to_lowercase();
            return Err(Error::invalid("manifest", format!("is read only with layout 'manifest', not '{name}'")));
        }
        (layout, _) => layout,
    };
    let (layout, candidates) = match asked {
        Layout::Manifest => {
            let manifest = options
                .manifest
                .as_ref()
                .ok_or_else(|| Error::invalid("manifest", "required with layout 'manifest'"))?;
            (Layout::Manifest, from_manifest(manifest, options.data_root.as_deref(), &mut problems)?)
        }
        layout => {
            let files = find_audio(root)?;
            let layout = if layout == Layout::Auto { detect_layout(root, &files) } else { layout };
            let mut out = Vec::new();
            for path in files {
                match label_file(root, &path, layout, &mut problems) {
                    Some(c) if options.speech_only && c.ravdess.is_some_and(|r| !r.is_speech()) => skipped += 1,
                    Some(c) => out.push(c),
                    None => {}
                }
            }
            (layout, out)
        }
    };
    if candidates.is_empty() && problems.is_empty() {
        return Err(Error::Dataset {
            path: Some(root.into()),
            reason: "no audio files (wav, flac, ogg, mp3) found".into(),
        });
    }

    let probed = probe_all(&candidates, options, cancel, on_progress)?;
    let mut items = Vec::new();
    for (c, result) in candidates.into_iter().zip(probed) {
        match result {
            Ok((hash, rate, duration)) => items.push(Item {
                path: c.path.display().to_string(),
                label: c.label,
                speaker: c.speaker,
                hash,
                duration_seconds: duration,
                sample_rate: Some(rate),
                ravdess: c.ravdess,
            }),
            Err(message) => {
                problems.push(Problem { path: c.path.display().to_string(), kind: ProblemKind::Unreadable, message })
            }
        }
    }
    let (items, duplicates) = drop_duplicates(items, &mut problems);
    let counts = count(&items, skipped);
    Ok(DatasetIndex { root: root.display().to_string(), layout, items, duplicates, problems, counts })
}

fn find_audio(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if has_audio_extension(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn has_audio_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn stem(path: &Path) -> &str {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("")
}

/// RAVDESS when most files carry RAVDESS names in RAVDESS's own folders (`Actor_NN…/`, copies such as
/// `Actor_03 - Copy` included, or the root); RAVDESS-named files sorted into other folders are the
/// user's `<label>/` folders (a relabelling).
fn detect_layout(root: &Path, files: &[PathBuf]) -> Layout {
    let named: Vec<&PathBuf> =
        files.iter().filter(|p| matches!(RavdessName::parse(stem(p)), Ok(Some(_)) | Err(_))).collect();
    let ravdess_folder = |p: &&PathBuf| {
        let parent = p.parent().unwrap_or(root);
        let actor = parent.file_name().and_then(|f| f.to_str()).and_then(|f| f.strip_prefix("Actor_"));
        parent == root || actor.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
    };
    if named.len() * 2 > files.len() && named.iter().all(ravdess_folder) {
        Layout::Ravdess
    } else {
        Layout::Folders
    }
}

fn label_file(root: &Path, path: &Path, layout: Layout, problems: &mut Vec<Problem>) -> Option<Candidate> {
    let shown = path.display().to_string();
    // A path that is not UTF-8 cannot cross to JavaScript intact (it would come back as another name,
    // or as the "same" name as another file): refused by name, never guessed at.
    if path.to_str().is_none() {
        problems.push(Problem {
            path: shown,
            kind: ProblemKind::Unreadable,
            message: "the path is not valid UTF-8: rename the file".into(),
        });
        return None;
    }
    match layout {
        Layout::Ravdess => match RavdessName::parse(stem(path)) {
            Ok(Some(name)) => {
                // A file in `Actor_NN/` must carry actor NN in its name.
                let folder = path.parent().and_then(|p| p.file_name()).and_then(|f| f.to_str()).unwrap_or("");
                if let Some(n) = folder.strip_prefix("Actor_").and_then(|n| n.parse::<u8>().ok()) {
                    if n != name.actor {
                        problems.push(Problem {
                            path: shown,
                            kind: ProblemKind::Mislabelled,
                            message: format!("file name says actor {:02} but it is in folder {folder}", name.actor),
                        });
                        return None;
                    }
                }
                Some(Candidate {
                    path: path.into(),
                    label: name.label().into(),
                    speaker: name.speaker(),
                    ravdess: Some(name),
                })
            }
            Ok(None) => {
                problems.push(Problem {
                    path: shown,
                    kind: ProblemKind::Unlabelled,
                    message: "not a RAVDESS file name (MM-VV-EE-II-SS-RR-AA)".into(),
                });
                None
            }
            Err(message) => {
                problems.push(Problem { path: shown, kind: ProblemKind::Mislabelled, message });
                None
            }
        },
        _ => {
            let parent = path.parent().filter(|p| *p != root).and_then(|p| p.file_name()).and_then(|f| f.to_str());
            match parent {
                Some(label) => Some(Candidate {
                    path: path.into(),
                    label: label.to_string(),
                    speaker: String::new(),
                    ravdess: None,
                }),
                None => {
                    problems.push(Problem {
                        path: shown,
                        kind: ProblemKind::Unlabelled,
                        message: "file is not inside a <label>/ folder".into(),
                    });
                    None
                }
            }
        }
    }
}

fn from_manifest(manifest: &Path, data_root: Option<&Path>, problems: &mut Vec<Problem>) -> Result<Vec<Candidate>> {
    let root = data_root
        .map(|r| std::fs::canonicalize(r).map_err(|e| Error::invalid("dataRoot", format!("{}: {e}", r.display()))))
        .transpose()?;
    let text = std::fs::read_to_string(manifest).map_err(|e| Error::io(manifest, e))?;
    // Spreadsheet exports start with a byte-order mark, which would otherwise hide the header.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let base = manifest.parent().unwrap_or(Path::new("."));
    let bad = |line: usize, why: String| Error::Dataset {
        path: Some(manifest.into()),
        reason: format!("line {line}: {why}"),
    };
    let jsonl = manifest.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    let rows = if jsonl { jsonl_rows(text, &bad)? } else { csv_rows(text, &bad)? };
    let mut out = Vec::new();
    for (path, label, speaker) in rows {
        let full = base.join(&path);
        if !full.is_file() {
            problems.push(Problem {
                path: full.display().to_string(),
                kind: ProblemKind::Unreadable,
                message: "listed in the manifest but not found".into(),
            });
            continue;
        }
        if let Some(root) = &root {
            if !std::fs::canonicalize(&full).is_ok_and(|real| real.starts_with(root)) {
                problems.push(Problem {
                    path: full.display().to_string(),
                    kind: ProblemKind::Unreadable,
                    message: format!("resolves outside dataRoot ({})", root.display()),
                });
                continue;
            }
        }
        if label.is_empty() {
            problems.push(Problem {
                path: full.display().to_string(),
                kind: ProblemKind::Unlabelled,
                message: "empty label in the manifest".into(),
            });
            continue;
        }
        let ravdess = RavdessName::parse(stem(&full)).ok().flatten();
        out.push(Candidate { path: full, label, speaker, ravdess });
    }
    Ok(out)
}

/// A manifest's rows as (path, label, speaker); `bad` makes the error for a line.
type ManifestRows = Vec<(String, String, String)>;

fn jsonl_rows(text: &str, bad: &dyn Fn(usize, String) -> Error) -> Result<ManifestRows> {
    #[derive(Deserialize)]
    struct Row {
        path: String,
        label: String,
        #[serde(default)]
        speaker: Option<String>,
    }
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row: Row = serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        rows.push((row.path, row.label, row.speaker.unwrap_or_default()));
    }
    Ok(rows)
}

/// A real CSV reader (RFC 4180): quoted fields may hold commas, quotes and line breaks.
fn csv_rows(text: &str, bad: &dyn Fn(usize, String) -> Error) -> Result<ManifestRows> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
    let cols: Vec<String> =
        reader.headers().map_err(|e| bad(1, e.to_string()))?.iter().map(|c| c.to_ascii_lowercase()).collect();
    if cols.iter().all(|c| c.is_empty()) {
        return Err(bad(1, "empty manifest".into()));
    }
    let col = |name: &str| cols.iter().position(|c| c == name);
    let missing = |name: &str| {
        let found = cols.join(", ");
        // One column holding a `;` or a tab: the file is separated by that, not by commas.
        let hint =
            if cols.len() == 1 && cols[0].contains([';', '\t']) { " (the header is split by commas only)" } else { "" };
        bad(1, format!("header needs a `{name}` column (path,label[,speaker]); found: {found}{hint}"))
    };
    let (p, l) = (col("path").ok_or_else(|| missing("path"))?, col("label").ok_or_else(|| missing("label"))?);
    let s = col("speaker");
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| bad(e.position().map_or(0, |p| p.line() as usize), e.to_string()))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        let get = |k: usize| record.get(k).ok_or_else(|| bad(line, format!("expected {} fields", cols.len())));
        rows.push((get(p)?.to_string(), get(l)?.to_string(), s.map(get).transpose()?.unwrap_or("").to_string()));
    }
    Ok(rows)
}

type Probed = std::result::Result<(String, u32, Option<f64>), String>;

fn probe_all(
    candidates: &[Candidate],
    options: &IndexOptions,
    cancel: &CancelFlag,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Probed>> {
    let threads = if options.threads == 0 { crate::cores() } else { options.threads };
    let total = candidates.len();
    let mut out = Vec::with_capacity(total);
    let chunk = 64;
    for (i, batch) in candidates.chunks(chunk).enumerate() {
        cancel.check()?;
        let results: Vec<Probed> = crate::pool::map_in_order(batch, threads, |_, c| probe_one(&c.path, options.verify))
            .into_iter()
            .map(|r| r.unwrap_or_else(|()| Err("probe thread panicked".to_string())))
            .collect();
        out.extend(results);
        let failed = out.iter().filter(|r| r.is_err()).count();
        on_progress(Progress { stage: "index", done: (i * chunk + batch.len()).min(total), total, failed });
    }
    Ok(out)
}

/// The header first (a file that is not audio is refused before it is read further), then the content
/// hash, streamed; with `verify: decode` every frame (up to the default maxDuration).
fn probe_one(path: &Path, verify: Verify) -> Probed {
    // The reason alone: the index reports it beside the path.
    let reason = |e: crate::Error| match e {
        crate::Error::AudioDecode { reason, .. } => reason,
        other => other.to_string(),
    };
    let info = probe_file(path).map_err(reason)?;
    let (rate, seconds) = match verify {
        Verify::Header => (info.sample_rate, info.duration_seconds()),
        Verify::Decode => {
            let audio = decode_file(path).map_err(reason)?;
            (audio.sample_rate, Some(audio.duration_seconds()))
        }
    };
    let hash = crate::digest::sha256_file(path).map_err(|e| e.to_string())?;
    Ok((hash, rate, seconds))
}

/// Keeps the first of each group of equal content or equal RAVDESS identity (items are sorted by path).
/// Keeps the first of files with the same bytes (or RAVDESS identity); a copy under another label is a
/// contradiction, reported as a problem rather than quietly dropped as a duplicate.
fn drop_duplicates(items: Vec<Item>, problems: &mut Vec<Problem>) -> (Vec<Item>, Vec<Duplicate>) {
    let mut by_hash: HashMap<String, (String, String)> = HashMap::new();
    let mut by_identity: HashMap<RavdessName, String> = HashMap::new();
    let mut kept = Vec::with_capacity(items.len());
    let mut duplicates = Vec::new();
    for item in items {
        if let Some((first, label)) = by_hash.get(&item.hash) {
            if *label != item.label {
                problems.push(Problem {
                    message: format!(
                        "the same audio as {first}, which is labelled {label:?}, but labelled {:?}",
                        item.label
                    ),
                    path: item.path,
                    kind: ProblemKind::Mislabelled,
                });
                continue;
            }
            duplicates.push(Duplicate {
                path: item.path,
                duplicate_of: first.clone(),
                reason: DuplicateReason::Content,
            });
            continue;
        }
        if let Some(first) = item.ravdess.and_then(|r| by_identity.get(&r)) {
            duplicates.push(Duplicate {
                path: item.path,
                duplicate_of: first.clone(),
                reason: DuplicateReason::Identity,
            });
            continue;
        }
        by_hash.insert(item.hash.clone(), (item.path.clone(), item.label.clone()));
        if let Some(r) = item.ravdess {
            by_identity.insert(r, item.path.clone());
        }
        kept.push(item);
    }
    (kept, duplicates)
}

fn count(items: &[Item], skipped: usize) -> Counts {
    let mut counts = Counts { items: items.len(), skipped, ..Counts::default() };
    let durations: Vec<f64> = items.iter().filter_map(|i| i.duration_seconds).collect();
    for item in items {
        *counts.by_label.entry(item.label.clone()).or_default() += 1;
        if !item.speaker.is_empty() {
            *counts.by_speaker.entry(item.speaker.clone()).or_default() += 1;
        }
    }
    if !durations.is_empty() {
        let total: f64 = durations.iter().sum();
        counts.duration_seconds = DurationStats {
            total,
            min: durations.iter().copied().fold(f64::INFINITY, f64::min),
            mean: total / durations.len() as f64,
            max: durations.iter().copied().fold(0.0, f64::max),
        };
    }
    counts
}
