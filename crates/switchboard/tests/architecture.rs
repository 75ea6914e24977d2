//! ARCHITECTURE.md names every file of the code: a file added without a word there fails here.

use std::path::{Path, PathBuf};

/// Files that need no entry: manifests and module roots, described with their crate.
const NEEDS_NO_ENTRY: [&str; 3] = ["Cargo.toml", "mod.rs", "lib.rs"];

fn files_below(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name != ".ci" || name == "target" || name == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            files_below(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[test]
fn architecture_md_names_every_file_of_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut files = Vec::new();
    for dir in ["crates", "proto", "deploy", "benches", "tests", ".ci"] {
        files_below(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files below {}", files.len(), root.display());
    let mut unnamed: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let named = NEEDS_NO_ENTRY.contains(&name.as_str()) || architecture.contains(&name);
            (!named).then(|| path.strip_prefix(&root).unwrap_or(path).display().to_string())
        })
        .collect();
    unnamed.sort();
    assert!(unnamed.is_empty(), "ARCHITECTURE.md does not name these files: {unnamed:#?}");
}
