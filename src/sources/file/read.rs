//! Reading the folder and its files within the limits, and bringing each
//! file's documents up to date.

use super::*;

pub(super) fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if is_yaml && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a file at most `max` bytes long (also `ssegate convert`'s input).
pub fn read_limited(file: &Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let too_big = |len: u64| {
        format!(
            "is {len} bytes; files of at most {max} bytes are read (limit max_file_bytes): split it into several files"
        )
    };
    let handle = std::fs::File::open(file).map_err(|e| format!("cannot read: {e}"))?;
    let len = handle.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    if len > max {
        return Err(too_big(len));
    }
    let mut text = String::with_capacity(len as usize);
    handle
        .take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > max {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

/// Brings `state` up to date with `file`. Returns `None` when the file is
/// unchanged, else how many documents were parsed. A file that fails as a
/// whole keeps its last good documents.
pub(super) fn read_file(file: &Path, state: &mut FileState, limits: &Limits) -> Option<usize> {
    let text = match read_limited(file, limits.max_file_bytes) {
        Ok(text) => text,
        Err(message) => {
            let kept = state.entries.iter().any(|e| e.doc().is_some());
            let problem = vec![LoadError::new(file, None, message, kept)];
            let changed = state.fingerprint.is_some() || state.problems != problem;
            state.fingerprint = None;
            state.problems = problem;
            return changed.then_some(0);
        }
    };
    let fingerprint = doc_key(&text);
    if state.fingerprint == Some(fingerprint) {
        return None;
    }
    state.fingerprint = Some(fingerprint);
    let spans = scan::split_documents(&text);
    if spans.len() > limits.max_documents {
        let kept = state.entries.iter().any(|e| e.doc().is_some());
        let message = format!(
            "holds {} documents; at most {} are read from one file (limit max_documents): split it into several files",
            spans.len(),
            limits.max_documents
        );
        state.problems = vec![LoadError::new(file, None, message, kept)];
        return Some(0);
    }

    let mut old: Vec<Option<Entry>> = std::mem::take(&mut state.entries).into_iter().map(Some).collect();
    let mut by_key: HashMap<DocKey, usize> = HashMap::new();
    for (j, entry) in old.iter().enumerate() {
        if let Some(Entry {
            key,
            outcome: Outcome::Good { .. },
        }) = entry
        {
            by_key.entry(*key).or_insert(j);
        }
    }
    let mut entries = Vec::with_capacity(spans.len());
    let mut failed = false;
    let mut parsed = 0;
    for (i, span) in spans.iter().enumerate() {
        let key = doc_key(span.text);
        let reused = by_key.remove(&key).and_then(|j| old[j].take());
        let outcome = match reused {
            Some(entry) => entry.outcome,
            None => {
                let previous = old.get(i).and_then(Option::as_ref).and_then(Entry::doc);
                parsed += 1;
                match parse_document(span, previous, limits) {
                    Ok((doc, warnings)) => Outcome::Good { doc, warnings },
                    Err(message) => {
                        failed = true;
                        Outcome::Bad {
                            message,
                            kept: previous.cloned(),
                        }
                    }
                }
            }
        };
        entries.push(Entry { key, outcome });
    }
    // A broken file keeps the objects of positions it no longer has, so a
    // half-saved file takes nothing down.
    if failed && old.len() > entries.len() {
        for entry in old.drain(entries.len()..) {
            entries.push(Entry {
                key: (0, 0),
                outcome: Outcome::Leftover(entry.and_then(Entry::into_doc)),
            });
        }
    }
    let mut problems = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match &entry.outcome {
            Outcome::Bad { message, kept } => {
                problems.push(LoadError::new(file, Some(i + 1), message.clone(), kept.is_some()))
            }
            Outcome::Good { warnings, .. } => {
                for w in warnings {
                    let mut warning = LoadError::new(file, Some(i + 1), w.clone(), false);
                    warning.warning = true;
                    problems.push(warning);
                }
            }
            Outcome::Leftover(_) => {}
        }
    }
    state.entries = entries;
    state.problems = problems;
    Some(parsed)
}
