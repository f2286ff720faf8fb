//! Watching the folder, delivering what it holds, and logging problems
//! once per change.

use super::*;

/// Loads the folder, delivers it, calls `ready` once that first table is
/// live, then watches the folder and delivers again on every change,
/// debounced. Runs until the watcher fails.
pub async fn watch(
    mut source: FolderSource,
    sink: Arc<dyn ObjectSink>,
    debounce: Duration,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Our own reads raise access events; reacting to them would loop.
        if !matches!(&event, Ok(e) if e.kind.is_access()) {
            let _ = tx.send(event);
        }
    })?;
    watcher.watch(source.dir(), RecursiveMode::NonRecursive)?;
    reload(&mut source, &*sink);
    ready();
    while let Some(event) = rx.recv().await {
        let since = std::time::Instant::now();
        if let Err(e) = event {
            warn!(error = %e, "file watch error");
        }
        // Let a burst of writes (editor save, git checkout) settle.
        let quiet = tokio::time::sleep(debounce);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                _ = &mut quiet => break,
                more = rx.recv() => match more {
                    Some(_) => quiet.as_mut().reset(tokio::time::Instant::now() + debounce),
                    None => break,
                },
            }
        }
        reload_since(&mut source, &*sink, Some(since));
    }
    Ok(())
}

/// Loads once and publishes; returns the load errors after logging them.
pub fn reload(source: &mut FolderSource, sink: &dyn ObjectSink) -> Vec<LoadError> {
    reload_since(source, sink, None)
}

/// As [`reload`]; `since` is when the first file event of the change came.
fn reload_since(source: &mut FolderSource, sink: &dyn ObjectSink, since: Option<std::time::Instant>) -> Vec<LoadError> {
    let started = std::time::Instant::now();
    let (objects, errors) = source.load();
    log_problems(&errors);
    let loaded = started.elapsed();
    let generation = sink.deliver(&objects, since);
    if generation == 1 {
        info!(dir = %source.dir().display(), routes = objects.routes.len(), "configuration loaded");
    }
    // The objects are rebuilt from the parsed documents on every load:
    // free them before the heap is trimmed.
    let size = crate::sources::object_count(&objects);
    drop(objects);
    sink.delivered(size);
    debug!(generation, parsed = source.parsed(), ?loaded, elapsed = ?started.elapsed(), "folder reloaded");
    errors
}

/// Logs the problems first seen at this load, one line each, at most
/// [`LOGGED_PER_FILE`] per file and a count of the rest.
fn log_problems(errors: &[LoadError]) {
    let mut per_file: HashMap<&Path, usize> = HashMap::new();
    for e in errors.iter().filter(|e| e.new) {
        let n = per_file.entry(&e.file).or_default();
        *n += 1;
        if *n > LOGGED_PER_FILE {
            continue;
        }
        if e.warning {
            warn!(warning = %e, "configuration warning");
        } else {
            warn!(error = %e, "configuration problem");
        }
    }
    for (file, n) in per_file {
        if n > LOGGED_PER_FILE {
            warn!(file = %file.display(), more = n - LOGGED_PER_FILE, "more configuration problems in this file are not logged");
        }
    }
}
