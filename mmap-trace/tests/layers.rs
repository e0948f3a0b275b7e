//! The one rule of the house (docs/architecture.md): each layer imports
//! only the layers below it, and the pure ones (account) not even all of
//! those. This test reads the sources and fails on an arrow the wrong way.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// Each layer, lowest first, with the layers it may import.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("unwind", &["model"]),
    ("resolve", &["model", "unwind"]),
    ("sys", &["model", "unwind"]),
    // Pure: no `sys`. Time and /proc readings come in as plain data.
    ("account", &["model", "resolve"]),
    ("trace", &["model", "resolve", "account"]),
    ("session", &["model", "unwind", "resolve", "sys", "account"]),
    ("report", &["model", "resolve", "account"]),
    (
        "app",
        &[
            "model", "unwind", "resolve", "sys", "account", "trace", "session", "report",
        ],
    ),
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The layers a source file names as `crate::<layer>`.
fn imported_layers(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .map(|(at, _)| {
            text[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn layers_import_only_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let mut components = relative.components();
        let first = components.next().unwrap().as_os_str().to_str().unwrap();
        if components.next().is_none() {
            // lib.rs and main.rs sit above every layer.
            continue;
        }
        let (_, allowed) = LAYERS
            .iter()
            .find(|(layer, _)| *layer == first)
            .unwrap_or_else(|| panic!("{first}/ is not a layer of docs/architecture.md"));
        let text = fs::read_to_string(file).unwrap();
        for layer in imported_layers(&text) {
            if layer != first && !allowed.contains(&layer.as_str()) {
                wrong.push(format!("{} imports crate::{layer}", relative.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows the wrong way:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_top_holds_only_the_entry_points_and_no_file_is_long() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let top: BTreeSet<String> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".rs"))
        .collect();
    assert_eq!(top, BTreeSet::from(["lib.rs".into(), "main.rs".into()]));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let lines = fs::read_to_string(&file).unwrap().lines().count();
        assert!(lines <= 600, "{} has {lines} lines", file.display());
    }
}
